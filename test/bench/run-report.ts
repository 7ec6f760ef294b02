// The report of `npm run bench` (run.ts): the throughput tables per client, the CPU tables,
// the memory lines with their targets, what limits the figures (observations computed from
// this run's numbers), and this run's figures for the issue-17 targets block (targets.ts).

import os from 'node:os';
import { fmtMiB } from './common.js';
import { idleSplit, smapsLines } from './run-memory.js';
import type { AcceptanceCell, TargetFigures } from './targets.js';
import {
  CONCURRENCY, HUGE_MB, MESSAGES, REPEAT, SIZE, TARGET_HUGE_GROWTH_MIB, TARGET_IDLE_MIB, TARGET_RATIO, WARMUP,
  TARGET_ROWS, cells, checks, key, mem, notes, problems,
  type Cell, type Client, type CpuFigures, type HugeFigures, type Target,
} from './run-context.js';

/** CPU ms over wall ms as a percentage of one core. */
function pct(cpuMs: number, wallMs: number): string {
  return wallMs > 0 ? `${((cpuMs / wallMs) * 100).toFixed(0)}%` : 'n/a';
}

/**
 * CPU ms charged to other processes during a run (other users of the box): process time of the
 * whole machine minus the server and the client. Kernel softirq time (loopback TCP) is not in it.
 */
export function otherMs(m: CpuFigures, wallMs: number): number | undefined {
  if (m.machineProc === undefined || m.cpuMs === undefined || m.clientMs === undefined) return undefined;
  return Math.max(0, m.machineProc * os.cpus().length * wallMs - m.cpuMs - m.clientMs);
}

export function cpuSummary(m: CpuFigures, wallMs: number): string {
  return `CPU: server ${pct(m.cpuMs ?? NaN, wallMs)} (main thread ${pct(m.mainThreadMs ?? NaN, wallMs)}), ` +
    `client ${pct(m.clientMs ?? NaN, wallMs)}, other ${pct(otherMs(m, wallMs) ?? NaN, wallMs)}`;
}

function fmtRate(c: Cell | undefined): string {
  if (!c) return '-';
  const s = c.rate >= 100 ? c.rate.toFixed(0) : c.rate.toFixed(1);
  return c.error ? `${s}!` : s;
}

function table(client: Client, title: string): string[] {
  const rows: string[] = [];
  const w = 10;
  rows.push(title);
  rows.push('  ' + 'target'.padEnd(18) + CONCURRENCY.map((c) => `c=${c}`.padStart(w)).join(''));
  for (const t of TARGET_ROWS) {
    if (!CONCURRENCY.some((c) => cells.has(key(t, client, c)))) continue;
    rows.push('  ' + t.padEnd(18) + CONCURRENCY.map((c) => fmtRate(cells.get(key(t, client, c))).padStart(w)).join(''));
  }
  const ratio = (a: Target, b: Target): string[] =>
    CONCURRENCY.map((c) => {
      const x = cells.get(key(a, client, c));
      const y = cells.get(key(b, client, c));
      return x && y && y.rate > 0 ? `${(x.rate / y.rate).toFixed(2)}x` : '-';
    });
  if (CONCURRENCY.some((c) => cells.has(key('tidemail', client, c)) && cells.has(key('postfix', client, c)))) {
    rows.push('  ' + 'tidemail/postfix'.padEnd(18) + ratio('tidemail', 'postfix').map((s) => s.padStart(w)).join('') +
      `   (target >= ${TARGET_RATIO.toFixed(1)}x)`);
  }
  if (CONCURRENCY.some((c) => cells.has(key('tidemail', client, c)) && cells.has(key('floor', client, c)))) {
    rows.push('  ' + 'tidemail/floor'.padEnd(18) + ratio('tidemail', 'floor').map((s) => s.padStart(w)).join(''));
  }
  if (CONCURRENCY.some((c) => cells.has(key('tidemail', client, c)) && cells.has(key('engine+fsync', client, c)))) {
    rows.push('  ' + 'tidemail/engine+fs'.padEnd(18) + ratio('tidemail', 'engine+fsync').map((s) => s.padStart(w)).join(''));
  }
  return rows;
}

/** Per target: the largest (max - min) / median over its cells, as a percentage. */
function spreads(): string {
  const parts: string[] = [];
  for (const t of TARGET_ROWS) {
    const s = [...cells.entries()].filter(([k]) => k.startsWith(t + '|')).map(([, c]) => c.spread ?? 0);
    if (s.length) parts.push(`${t} ${(Math.max(...s) * 100).toFixed(0)}%`);
  }
  return parts.join(', ');
}

/**
 * CPU per cell, each in % of one core over the run: server processes (their main thread in
 * brackets: for Node servers the JavaScript thread), the load client, everything else on the
 * machine; then server CPU microseconds per accepted message.
 */
function cpuTable(client: Client): string[] {
  const w = 22;
  const rows = [
    `CPU with ${client === 'node' ? 'the Node client' : client === 'smtp-source' ? 'smtp-source -d' : 'smtp-source, one connection per message'} (% of one core): ` +
      'server(main thread)/client/other; server CPU us per message',
  ];
  rows.push('  ' + 'target'.padEnd(12) + CONCURRENCY.map((c) => `c=${c}`.padStart(w)).join(''));
  for (const t of TARGET_ROWS) {
    if (!CONCURRENCY.some((c) => cells.has(key(t, client, c)))) continue;
    const col = (c: number): string => {
      const x = cells.get(key(t, client, c));
      if (!x || x.cpuMs === undefined || !x.accepted) return '-';
      const p = (ms: number | undefined): string => (ms === undefined ? '?' : ((ms / x.elapsedMs) * 100).toFixed(0));
      const main = t === 'postfix' ? '' : `(${p(x.mainThreadMs)})`;
      return `${p(x.cpuMs)}${main}/${p(x.clientMs)}/${p(otherMs(x, x.elapsedMs))} ${((x.cpuMs * 1000) / x.accepted).toFixed(0)}`;
    };
    rows.push('  ' + t.padEnd(12) + CONCURRENCY.map((c) => col(c).padStart(w)).join(''));
  }
  return rows;
}

const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');

function memoryLines(): string[] {
  const rows: string[] = ['memory (tidemail daemon; VmRSS / VmHWM from /proc/<pid>/status; MB = MiB)'];
  const line = (label: string, value: string, extra = ''): void => {
    rows.push('  ' + label.padEnd(34) + value.padStart(9) + (extra ? '   ' + extra : ''));
  };
  if (mem.nodeBaselineKiB) line('plain `node` idle RSS (reference)', fmtMiB(mem.nodeBaselineKiB));
  if (mem.modules?.length && mem.nodeBaselineKiB) {
    const base = mem.nodeBaselineKiB;
    rows.push('    plain node + one import: ' +
      mem.modules.map((m) => `${m.name} ${m.rssKiB >= base ? '+' : ''}${((m.rssKiB - base) / 1024).toFixed(1)}`).join(', ') + ' MB');
  }
  if (mem.idle) {
    line('idle RSS (start + 2 s)', fmtMiB(mem.idle.rssKiB),
      `target <= ${TARGET_IDLE_MIB} MB: ${verdict(mem.idle.rssKiB / 1024 <= TARGET_IDLE_MIB)}`);
  }
  if (mem.afterLoad) {
    line('peak RSS over all runs (VmHWM)', fmtMiB(mem.afterLoad.hwmKiB));
    line('RSS after the load', fmtMiB(mem.afterLoad.rssKiB));
  }
  rows.push(...smapsLines());
  if (mem.children?.length && !mem.afterTree) rows.push(`  note: the daemon has child processes (${mem.children.join(', ')}), not counted`);
  if (mem.huge) {
    const h = mem.huge;
    const growth = h.sampledMaxKiB - h.before.rssKiB;
    const hwmGrowth = h.hwmAfterKiB !== null ? h.hwmAfterKiB - h.before.rssKiB : null;
    const worst = hugeGrowthKiB(h);
    line(`${HUGE_MB} MB message: RSS before`, fmtMiB(h.before.rssKiB));
    line(`${HUGE_MB} MB message: RSS growth`, fmtMiB(worst),
      `target <= ${TARGET_HUGE_GROWTH_MIB} MB: ${verdict(worst / 1024 <= TARGET_HUGE_GROWTH_MIB)}`);
    rows.push(`    (max of: sampled every 50 ms ${fmtMiB(growth)}` +
      (hwmGrowth !== null ? `, VmHWM after reset ${fmtMiB(hwmGrowth)}` : ', VmHWM reset not possible') + ')');
    rows.push(`    ${h.accepted ? 'accepted' : 'NOT accepted'} in ${(h.elapsedMs / 1000).toFixed(2)} s ` +
      `(${(h.bytesSent / 1048576 / (h.elapsedMs / 1000)).toFixed(0)} MB/s): ${h.reply}`);
  }
  if (mem.hugeExperiment) {
    const { nodeArgs, figures: h } = mem.hugeExperiment;
    const worst = Math.max(h.sampledMaxKiB, h.hwmAfterKiB ?? 0) - h.before.rssKiB;
    line(`  same, daemon run with`, fmtMiB(worst),
      `node ${nodeArgs.join(' ')} (experiment; ${h.accepted ? 'accepted' : 'NOT accepted'} in ${(h.elapsedMs / 1000).toFixed(2)} s)`);
  }
  return rows;
}

/** RSS growth for the big message: the larger of the sampled peak and VmHWM after its reset. */
function hugeGrowthKiB(h: HugeFigures): number {
  return Math.max(h.sampledMaxKiB, h.hwmAfterKiB ?? -Infinity) - h.before.rssKiB;
}

/** This run's figures for the issue-17 block (targets.ts). */
export function targetFigures(cores: number, fsyncMs: number, extra: Pick<TargetFigures, 'stages' | 'startup'>): TargetFigures {
  const acceptance = (client: Client): AcceptanceCell[] => CONCURRENCY.flatMap((c) => {
    const t = cells.get(key('tidemail', client, c));
    const p = cells.get(key('postfix', client, c));
    if (!t || !p || !t.accepted || t.cpuMs === undefined) return [];
    const perMsg = (cpuMs: number) => (cpuMs * 1000) / t.accepted;
    const rate = (target: Target) => cells.get(key(target, client, c))?.rate;
    const floors = { sink: rate('floor'), sinkFsync: rate('floor+fsync'), engine: rate('engine'), engineFsync: rate('engine+fsync') };
    return [{
      c, tidemail: t.rate, postfix: p.rate, cpuUs: perMsg(t.cpuMs), ...(t.mainThreadMs !== undefined ? { jsUs: perMsg(t.mainThreadMs) } : {}), ...(t.machineBusy !== undefined ? { machineBusy: t.machineBusy } : {}),
      ...(Object.values(floors).some((x) => x !== undefined) ? { floors } : {}),
    }];
  });
  const engineCpu = (client: Client): Record<number, number> => {
    const out: Record<number, number> = {};
    for (const c of CONCURRENCY) {
      const e = cells.get(key('engine', client, c));
      if (e?.accepted && e.cpuMs !== undefined) out[c] = (e.cpuMs * 1000) / e.accepted;
    }
    return out;
  };
  const floorCpuUs: Record<number, number> = {};
  for (const c of CONCURRENCY) {
    const f = cells.get(key('floor', 'smtp-source', c));
    if (f?.accepted && f.cpuMs !== undefined) floorCpuUs[c] = (f.cpuMs * 1000) / f.accepted;
  }
  const base = mem.nodeBaselineKiB;
  return {
    fsyncMs, cores, floorCpuUs, engineCpuUs: { reused: engineCpu('smtp-source'), oneConnection: engineCpu('smtp-source-1') }, ...extra,
    reused: acceptance('smtp-source'),
    oneConnection: acceptance('smtp-source-1'),
    ...(mem.idle ? { idle: {
      rssMiB: mem.idle.rssKiB / 1024,
      ...(base ? { nodeMiB: base / 1024 } : {}),
      imports: base ? (mem.modules ?? []).map((m) => ({ name: m.name, addMiB: (m.rssKiB - base) / 1024 })) : [],
      ...(idleSplit() ? { split: idleSplit()! } : {}),
    } } : {}),
    ...(mem.afterLoad ? { peak: { hwmMiB: mem.afterLoad.hwmKiB / 1024, concurrency: Math.max(...CONCURRENCY), ...(mem.idle ? { idleMiB: mem.idle.rssKiB / 1024 } : {}) } } : {}),
    ...(mem.huge ? { hugeGrowthMiB: hugeGrowthKiB(mem.huge) / 1024, hugeMiB: HUGE_MB } : {}),
  };
}

export function report(machine: string[], limits: string[]): string[] {
  const out: string[] = [];
  out.push(...machine, '');
  out.push(`${MESSAGES} messages x ${SIZE} bytes per run; messages/s accepted (250 after DATA); higher is better;`);
  out.push(`each figure is the median of ${REPEAT} run(s) after a ${WARMUP}-message warm-up; run-to-run spread (max-min)/median up to: ${spreads()}.`);
  if ([...cells.values()].some((c) => c.error)) out.push('"!" = not every message was accepted in that run (see problems).');
  out.push('');
  const hasSource = [...cells.keys()].some((k) => k.includes('|smtp-source|'));
  if (hasSource) out.push(...table('smtp-source', 'client: smtp-source -d (Postfix load client, no pipelining, connections reused)'), '');
  if ([...cells.keys()].some((k) => k.includes('|smtp-source-1|'))) {
    out.push(...table('smtp-source-1', 'client: smtp-source without -d (one connection per message, as cron and LAN devices send)'), '');
  }
  if ([...cells.keys()].some((k) => k.includes('|node|'))) {
    out.push(...table('node', 'client: test/bench/load.ts (Node, PIPELINING when advertised)'), '');
  }
  for (const client of ['smtp-source', 'smtp-source-1', 'node'] as const) {
    if ([...cells.keys()].some((k) => k.includes(`|${client}|`))) out.push(...cpuTable(client), '');
  }
  out.push(...memoryLines());
  if (problems.length) out.push('', 'problems:', ...problems.map((p) => '  - ' + p.replace(/\n/g, '\n    ')));
  if (checks.length) out.push('', 'queue checks:', ...checks.map((n) => '  - ' + n));
  if (notes.length) out.push('', 'notes:', ...notes.map((n) => '  - ' + n));
  if (limits.length) out.push('', 'what limits the figures:', ...limits.map((n) => '  - ' + n));
  return out;
}

/** Observations computed from this run's numbers. */
export function limitNotes(cores: number, fsyncMs: number): string[] {
  const out: string[] = [];
  out.push(`${cores} CPU core(s) shared by the load client, the server under test and (for Postfix) its helper ` +
    'processes; figures on a router-class box will be lower and the ratios may differ.');
  out.push(`One write(4 KiB)+fdatasync in ${os.tmpdir()} takes ${fsyncMs.toFixed(2)} ms (median of 100), so a ` +
    `server that fsyncs each message by itself tops out near ${(1000 / fsyncMs).toFixed(0)} msg/s per session; ` +
    'at c=1 no group commit is possible, so tidemail and Postfix both pay this once per message.');
  for (const client of ['smtp-source', 'smtp-source-1', 'node'] as const) {
    const f = cells.get(key('floor', client, 50));
    const t = cells.get(key('tidemail', client, 50));
    const p = cells.get(key('postfix', client, 50));
    if (f && t) {
      out.push(`${client}: at c=50 tidemail reaches ${((t.rate / f.rate) * 100).toFixed(0)}% of the floor ` +
        `(${f.rate.toFixed(0)} msg/s, which is the client + loopback + one Node event loop doing nothing)` +
        (p ? `; Postfix reaches ${((p.rate / f.rate) * 100).toFixed(0)}%.` : '.'));
    }
  }
  // Is the daemon CPU-bound (its JavaScript thread busy), starved (the machine is full) or
  // waiting (commits, round trips)? Judged on the Node-client runs (smtp-source if none).
  for (const c of CONCURRENCY) {
    const t = cells.get(key('tidemail', 'node', c)) ?? cells.get(key('tidemail', 'smtp-source', c));
    if (!t || t.cpuMs === undefined || !t.accepted) continue;
    const busy = t.cpuMs / t.elapsedMs;
    const js = (t.mainThreadMs ?? t.cpuMs) / t.elapsedMs;
    const box = t.machineBusy ?? 0;
    const client = (t.clientMs ?? 0) / t.elapsedMs;
    const other = (otherMs(t, t.elapsedMs) ?? 0) / t.elapsedMs;
    const cpuPerMsg = (t.cpuMs * 1000) / t.accepted;
    const jsPerMsg = ((t.mainThreadMs ?? t.cpuMs) * 1000) / t.accepted;
    const wallPerMsg = 1e6 / t.rate;
    let why: string;
    if (js >= 0.85) why = 'its JavaScript thread is saturated, so CPU per message sets the rate';
    else if (box >= 0.85) {
      why = `the machine is ${(box * 100).toFixed(0)}% busy (daemon ${(busy * 100).toFixed(0)}% + client ` +
        `${(client * 100).toFixed(0)}% + other ${(other * 100).toFixed(0)}% of ${cores * 100}%), so the daemon is short of CPU`;
    } else if (c === 1) {
      why = `one session is serial: each message takes ${wallPerMsg.toFixed(0)} us, of which ${cpuPerMsg.toFixed(0)} us ` +
        'is daemon CPU, so its CPU cost per message sets the rate';
    } else {
      why = `it is neither CPU-bound nor short of CPU, so ${c} sessions wait on something serial ` +
        '(one queue writer: commit/fsync latency, statement round trips)';
    }
    out.push(`tidemail at c=${c}: daemon ${(busy * 100).toFixed(0)}% of one core (JS thread ${(js * 100).toFixed(0)}%), ` +
      `${cpuPerMsg.toFixed(0)} us CPU per message (JS thread ${jsPerMsg.toFixed(0)} us) - ${why}.`);
  }
  // Other users of the machine disturb the figures; say how much.
  const others = [...cells.values()].map((x) => (otherMs(x, x.elapsedMs) ?? 0) / x.elapsedMs);
  if (others.length) {
    const avg = others.reduce((a, b) => a + b, 0) / others.length;
    const max = Math.max(...others);
    out.push(`Other processes on the machine used on average ${(avg * 100).toFixed(0)}% of one core during the ` +
      `measured runs (at most ${(max * 100).toFixed(0)}%)` +
      (avg > 0.15 ? ': the figures are disturbed; rerun on a quiet machine for clean numbers.' : '.'));
  }
  out.push('CPU figures come from /proc tick counters (10 ms): the short floor runs are approximate, and a ' +
    "process that exits during a run is lost from its server's column (it shows up as other).");
  out.push('smtp-source does not pipeline: every command costs a round trip, which is the same for all ' +
    'three servers; the Node client pipelines MAIL/RCPT/DATA when the server offers PIPELINING.');
  out.push('Postfix runs with its stock process model (one smtpd per session, cleanup writes and fsyncs ' +
    'one queue file per message); mail is put on hold, so no queue manager work competes with it.');
  return out;
}
