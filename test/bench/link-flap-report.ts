// Link-flap benchmark (link-flap.ts): what a run's observations come to — the figures per
// subject, the console table, and the "Link flaps" section of test/bench/RESULTS.md.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DRAIN_TIMEOUT_MS } from './link-flap-schedule.js';
import type { Msg, Subject } from './link-flap-subjects.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/test/bench
const ROOT = process.env.BENCH_ROOT ?? path.resolve(HERE, '../../..');
const GOALS = { medianS: 2, p90S: 10, maxS: 30 };

export interface LinkFlapResult {
  /** plain-text lines for the console / run.ts report */
  lines: string[];
  /** the generated part of the RESULTS.md section (markdown) */
  markdown: string;
}

export interface Window {
  start: number;
  end: number;
}

export interface Figures {
  injected: number;
  accepted: number;
  delivered: number;
  lost: number;
  duplicates: number;
  unacked: number; // arrived although the 250 never came
  refused: string[];
  attemptsWhileDown: number;
  synArrived: number;
  latencies: number[]; // ms
  missedPairs: number;
  missedMsgs: number;
  missedWindows: number;
  longWindows: number;
  quietWindows: number;
  shortWindowsWaiting: number;
  queuedAtEnd: number | null;
  drainedMs: number | null;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function figures(s: Subject, ups: number[], windows: Window[], synArrived: number, queuedAtEnd: number | null, drainedMs: number | null): Figures {
  const msgs = [...s.msgs.values()];
  const accepted = msgs.filter((m) => m.acceptedAt !== undefined);
  const first = (tag: string): number | undefined => s.far.arrivals.get(tag)?.[0];
  let duplicates = 0;
  for (const times of s.far.arrivals.values()) duplicates += times.length - 1;
  const latencies: number[] = [];
  for (const m of accepted) {
    const d = first(m.tag);
    if (d === undefined) continue;
    // the first link-up that found it waiting (accepted before, arrived after)
    const u = ups.find((t) => t > m.acceptedAt! && t < d);
    if (u !== undefined) latencies.push(d - u);
  }
  latencies.sort((a, b) => a - b);
  let missedPairs = 0;
  const missed = new Set<string>();
  let missedWindows = 0;
  let longWindows = 0;
  let quiet = 0;
  let shortWaiting = 0;
  for (const w of windows) {
    const len = (w.end - w.start) / 1000;
    const waitingAt = (t: number): Msg[] => accepted.filter((m) => m.acceptedAt! < t && !((first(m.tag) ?? Infinity) <= t));
    if (len >= 10) {
      longWindows++;
      const left = waitingAt(w.start).filter((m) => (first(m.tag) ?? Infinity) > w.end);
      missedPairs += left.length;
      left.forEach((m) => missed.add(m.tag));
      if (left.length) missedWindows++;
    }
    if (len >= 8 && len <= 17 && waitingAt(w.start).length > 0) {
      shortWaiting++;
      const any = [...s.far.arrivals.values()].some((times) => times.some((t) => t >= w.start && t <= w.end));
      if (!any) quiet++;
    }
  }
  const acceptedTags = new Set(accepted.map((m) => m.tag));
  return {
    injected: msgs.length,
    accepted: accepted.length,
    delivered: accepted.filter((m) => first(m.tag) !== undefined).length,
    lost: accepted.filter((m) => first(m.tag) === undefined).length,
    duplicates,
    unacked: [...s.far.arrivals.keys()].filter((t) => !acceptedTags.has(t)).length,
    refused: msgs.filter((m) => m.acceptedAt === undefined).map((m) => `${m.tag}: ${m.reply ?? 'no reply'}`),
    attemptsWhileDown: s.attemptsWhileDown,
    synArrived,
    latencies,
    missedPairs,
    missedMsgs: missed.size,
    missedWindows,
    longWindows,
    quietWindows: quiet,
    shortWindowsWaiting: shortWaiting,
    queuedAtEnd,
    drainedMs,
  };
}

const secs = (ms: number): string => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s` : '–');

function rows(f: Figures): string[] {
  const l = f.latencies;
  return [
    `${f.injected} / ${f.accepted} / ${f.delivered}`,
    `${f.duplicates} / ${f.lost}`,
    String(f.attemptsWhileDown),
    l.length ? `${secs(quantile(l, 0.5))} / ${secs(quantile(l, 0.9))} / ${secs(l.at(-1)!)} (n=${l.length})` : '– (n=0)',
    `${f.missedPairs} (${f.missedMsgs} messages, ${f.missedWindows} of ${f.longWindows} windows)`,
    `${f.quietWindows} of ${f.shortWindowsWaiting}`,
    f.drainedMs !== null ? `yes, ${secs(f.drainedMs)}` : `no: ${f.lost} missing after ${DRAIN_TIMEOUT_MS / 1000} s` +
      (f.queuedAtEnd !== null ? `, ${f.queuedAtEnd} in its queue` : ''),
    String(f.synArrived),
  ];
}

const ROW_NAMES = [
  'injected / accepted / delivered',
  'duplicates / lost',
  'connection attempts while down (SYNs out of HOST_IF)',
  'link-up → delivered, median / p90 / max',
  'waiting messages that missed a whole up-window ≥ 10 s',
  'up-windows of 8–17 s with mail waiting and nothing delivered',
  'queue drained after the schedule (link up, no loss)',
  'SYNs that reached the far side (all)',
];
const ROW_GOALS = [
  'all',
  '0 / 0',
  '0',
  `≤ ${GOALS.medianS} s / ≤ ${GOALS.p90S} s / ≤ ${GOALS.maxS} s`,
  '0',
  '0',
  '',
  '',
];

export function report(head: string[], how: string, machine: string, date: string, schedule: string, all: Array<[Subject, Figures]>, notes: string[]): LinkFlapResult {
  const cols = all.map(([, f]) => rows(f));
  const labels = all.map(([s]) => s.label);
  const lines = [...head, ''];
  const w0 = Math.max(...ROW_NAMES.map((r) => r.length));
  const w = labels.map((l, i) => Math.max(l.length, ...cols[i]!.map((c) => c.length)));
  lines.push(`  ${''.padEnd(w0)}  ${labels.map((l, i) => l.padEnd(w[i]!)).join('  ')}  goal`);
  ROW_NAMES.forEach((r, k) => lines.push(`  ${r.padEnd(w0)}  ${cols.map((c, i) => c[k]!.padEnd(w[i]!)).join('  ')}  ${ROW_GOALS[k]}`));
  const extra: string[] = [];
  for (const [s, f] of all) {
    if (f.refused.length) extra.push(`${s.label}: ${f.refused.length} not accepted, e.g. ${f.refused.slice(0, 2).join('; ')}`);
    if (f.unacked) extra.push(`${s.label}: ${f.unacked} arrived although their 250 never came (not counted as delivered)`);
  }
  extra.push(...notes);
  if (extra.length) lines.push('', ...extra.map((e) => `  - ${e}`));

  const md = [
    `Run ${date} on ${machine}.`,
    '',
    `Schedule: ${schedule}.`,
    '',
    `Rerun alone: \`${how}\` (or as part of \`npm run bench\`).`,
    '',
    `| | ${labels.join(' | ')} | goal |`,
    `|---|${labels.map(() => '---|').join('')}---|`,
    ...ROW_NAMES.map((r, k) => `| ${r} | ${cols.map((c) => c[k]).join(' | ')} | ${ROW_GOALS[k]} |`),
    '',
    ...extra.map((e) => `- ${e}`),
    ...(extra.length ? [''] : []),
    'Link-up → delivered counts each message that was still waiting when a link-up came, from the first such ' +
      'link-up to its arrival. Attempts while down are SYN packets (retransmissions included) leaving our end of the ' +
      'link towards the smarthost between carrier-down and carrier-up; the far side cannot see them.',
    '',
  ].join('\n');
  return { lines, markdown: md };
}

// RESULTS.md section (kept by run.ts when it rewrites the file)

export const SECTION_HEAD = '## Link flaps';
const BEGIN = '<!-- link-flap: generated by test/bench/link-flap.ts; text after the end marker is kept -->';
const END = '<!-- link-flap: end -->';

/** The "## Link flaps" section of a RESULTS.md text (to the next "## " heading or the end), or null. */
export function linkFlapSection(md: string): string | null {
  const i = md.indexOf(`\n${SECTION_HEAD}`);
  if (i < 0) return md.startsWith(SECTION_HEAD) ? md.slice(0, nextHeading(md, 0)) : null;
  return md.slice(i + 1, nextHeading(md, i + 1));
}

function nextHeading(md: string, from: number): number {
  const j = md.indexOf('\n## ', from + 1);
  return j < 0 ? md.length : j + 1;
}

/** `md` with its link-flap section's generated part replaced by `generated` (section appended if missing). */
export function putLinkFlapSection(md: string, generated: string): string {
  const block = `${BEGIN}\n\n${generated.trimEnd()}\n\n${END}\n`;
  const old = linkFlapSection(md);
  if (old === null) return `${md.trimEnd()}\n\n${SECTION_HEAD}\n\n${block}`;
  const b = old.indexOf(BEGIN);
  const e = old.indexOf(END);
  const fresh = b >= 0 && e > b
    ? old.slice(0, b) + block + old.slice(e + END.length).replace(/^\n/, '')
    : `${SECTION_HEAD}\n\n${block}${md.endsWith(old) ? '' : '\n'}`;
  return md.replace(old, fresh.endsWith('\n') ? fresh : fresh + '\n');
}

export function resultsPath(): string {
  return path.join(ROOT, 'test', 'bench', 'RESULTS.md');
}
