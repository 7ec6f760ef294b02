// Link-flap benchmark (issue 14): a smarthost behind a link that loses carrier and drops packets.
//
// Run:   npm run bench                                   (all benches; this one after the others)
//        node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]   (this one alone)
// Also:  BENCH_FLAP_MINUTES, BENCH_FLAP_SEED; run.ts takes --flap-minutes / --no-link-flap.
// Needs root, iproute2 and nft (this kernel has no sch_netem, so loss is an nftables numgen rule).
//
// Set-up: the far side is a network namespace behind a veth pair (test/helpers/netns.ts) with one
// smarthost process per subject (test/helpers/smarthost-proc.ts; port 2525 for tidemail, 2526 for
// Postfix). Link down = carrier loss: the far end goes down, ours stays admin-up (NO-CARRIER).
// While up, 20 % of the packets are dropped both ways. A seeded PRNG (mulberry32) draws the
// schedule: down 5–60 s, up 5–30 s, alternating, starting down, for M minutes (10 by default).
// Every 2 s one message (X-Tag header) goes by SMTP on loopback to each subject:
//   tidemail  the daemon (test/helpers/daemon.ts) with route online.interface = HOST_IF,
//             smarthost = FAR_IP:2525, tls none — everything else at its defaults;
//   postfix   a private instance (postfix.ts, relay) relaying to [FAR_IP]:2526 with
//             minimal_backoff_time 10s, maximal_backoff_time 60s, queue_run_delay 10s — it has no
//             link detector, so it just retries. Only when installed (and we are root).
// Both run at the same time over the same link, so they see the same flaps.
// After the schedule the link comes up without loss and we wait (at most 120 s) for the queues
// to drain, then count.
//
// Figures per subject:
//   injected / accepted (250 after DATA) / delivered / lost (accepted, never arrived) /
//   duplicates (arrivals of an X-Tag beyond the first);
//   connection attempts while down: TCP SYNs (without ACK; retransmitted SYNs count) leaving
//     HOST_IF to the subject's far port, from an nft counter in our namespace read just before
//     each carrier-down and just before the carrier-up that ends it (the far side cannot see them);
//   link-up → delivered: for each message that was still waiting when a link-up came, the time
//     from the first such link-up to its arrival (median / p90 / max);
//   missed windows: (message, up-window) pairs where a window of >= 10 s ended with the message
//     still waiting although it was queued before the window began; and up-windows of 8–17 s
//     that began with mail waiting and in which nothing at all arrived.
// Writes the "Link flaps" section of test/bench/RESULTS.md (between its markers; text after the
// end marker is kept), unless --no-write.

import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { canUseNetns, canUseNft, carrierDown, carrierUp, createVethNamespace, setLoss, type VethNamespace } from '../helpers/netns.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';
import { freePort, sleep, waitForSmtp } from './common.js';
import { abortPostfixSync, findPostfix, startPostfix, type PostfixInstance } from './postfix.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/test/bench
const ROOT = process.env.BENCH_ROOT ?? path.resolve(HERE, '../../..');
const SMARTHOST_PROC = path.join(HERE, '..', 'helpers', 'smarthost-proc.js');

const LOSS_PERCENT = 20;
const DOWN_S: [number, number] = [5, 60];
const UP_S: [number, number] = [5, 30];
const INJECT_EVERY_MS = 2000;
const DRAIN_TIMEOUT_MS = 120_000;
const GOALS = { medianS: 2, p90S: 10, maxS: 30 };

export interface LinkFlapOptions {
  minutes: number;
  seed: number;
  log?: (msg: string) => void;
}

export interface LinkFlapResult {
  /** plain-text lines for the console / run.ts report */
  lines: string[];
  /** the generated part of the RESULTS.md section (markdown) */
  markdown: string;
}

// ---------------------------------------------------------------------------------------------
// Schedule

/** mulberry32: a tiny seeded PRNG, so a seed gives the same schedule on every machine. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Phase {
  up: boolean;
  /** seconds from the start of the schedule */
  startS: number;
  lenS: number;
}

/** Alternating down/up phases (whole seconds), starting down, cut at `minutes`. */
export function makeSchedule(seed: number, minutes: number): Phase[] {
  const rnd = mulberry32(seed);
  const total = Math.round(minutes * 60);
  const phases: Phase[] = [];
  let t = 0;
  let up = false;
  while (t < total) {
    const [lo, hi] = up ? UP_S : DOWN_S;
    const len = Math.min(lo + Math.floor(rnd() * (hi - lo + 1)), total - t);
    phases.push({ up, startS: t, lenS: len });
    t += len;
    up = !up;
  }
  return phases;
}

// ---------------------------------------------------------------------------------------------
// The far side and the SYN counters

interface FarSide {
  port: number;
  proc: ChildProcess;
  /** X-Tag -> arrival times (ms since the bench's t0) */
  arrivals: Map<string, number[]>;
  stop(): void;
}

function startFarSide(v: VethNamespace, port: number, clock: () => number): Promise<FarSide> {
  const proc = spawn('ip', ['netns', 'exec', v.ns, process.execPath, SMARTHOST_PROC, v.farIp, String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const far: FarSide = { port, proc, arrivals: new Map(), stop: () => void proc.kill('SIGKILL') };
  let buf = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err = (err + d).slice(-2000)));
  return new Promise((resolve, reject) => {
    proc.on('exit', (code) => reject(new Error(`far-side smarthost on port ${port} exited with ${code}: ${err.trim()}`)));
    proc.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)) as { event: string; tag?: string | null };
        buf = buf.slice(nl + 1);
        if (ev.event === 'listening') resolve(far);
        if (ev.event === 'message' && ev.tag) far.arrivals.set(ev.tag, [...(far.arrivals.get(ev.tag) ?? []), clock()]);
      }
    });
  });
}

/**
 * nft counters of TCP SYNs (no ACK) to each far port: `out` in our namespace (oifname HOST_IF,
 * seen even while the carrier is down), `in` in the far namespace (what arrives, before the loss
 * rule drops anything). Removed by remove().
 */
class SynCounters {
  private readonly table: string;

  constructor(
    private readonly v: VethNamespace,
    private readonly ports: number[],
  ) {
    this.table = `tmflap${process.pid}`;
    const syn = ['tcp', 'flags', '&', '(syn|ack)', '==', 'syn'];
    this.remove();
    this.nft(false, 'add', 'table', 'inet', this.table);
    this.nft(false, 'add', 'chain', 'inet', this.table, 'out', '{ type filter hook output priority -10; }');
    this.nft(true, 'add', 'table', 'inet', this.table);
    this.nft(true, 'add', 'chain', 'inet', this.table, 'in', '{ type filter hook input priority -10; }');
    for (const p of ports) {
      this.nft(false, 'add', 'counter', 'inet', this.table, `out${p}`);
      this.nft(false, 'add', 'rule', 'inet', this.table, 'out', 'oifname', v.hostIf, ...syn, 'tcp', 'dport', String(p), 'counter', 'name', `out${p}`);
      this.nft(true, 'add', 'counter', 'inet', this.table, `in${p}`);
      this.nft(true, 'add', 'rule', 'inet', this.table, 'in', 'iifname', v.nsIf, ...syn, 'tcp', 'dport', String(p), 'counter', 'name', `in${p}`);
    }
  }

  private nft(inNs: boolean, ...args: string[]): string {
    const cmd = inNs ? ['netns', 'exec', this.v.ns, 'nft', ...args] : null;
    return cmd ? execFileSync('ip', cmd, { encoding: 'utf8', stdio: 'pipe' }) : execFileSync('nft', args, { encoding: 'utf8', stdio: 'pipe' });
  }

  private read(inNs: boolean, name: string): number {
    const out = this.nft(inNs, 'list', 'counter', 'inet', this.table, name);
    return Number(/packets (\d+)/.exec(out)?.[1] ?? NaN);
  }

  /** SYNs that left HOST_IF for far port `p` so far. */
  sent(p: number): number {
    return this.read(false, `out${p}`);
  }

  /** SYNs that arrived at the far side for port `p` so far. */
  arrived(p: number): number {
    return this.read(true, `in${p}`);
  }

  remove(): void {
    try { this.nft(false, 'delete', 'table', 'inet', this.table); } catch { /* not there */ }
    try { this.nft(true, 'delete', 'table', 'inet', this.table); } catch { /* not there / namespace gone */ }
  }
}

// ---------------------------------------------------------------------------------------------
// Subjects

interface Msg {
  tag: string;
  injectedAt: number;
  acceptedAt?: number;
  reply?: string;
}

interface Subject {
  name: string;
  label: string;
  /** SMTP port on 127.0.0.1 we inject into */
  port: number;
  far: FarSide;
  msgs: Map<string, Msg>;
  inflight: Set<Promise<void>>;
  attemptsWhileDown: number;
  /** messages still queued at the end, if the subject can tell */
  queued(): Promise<number | null>;
  stop(): Promise<void>;
}

function inject(s: Subject, n: number, clock: () => number): void {
  const tag = `${s.name}-${String(n).padStart(5, '0')}`;
  const m: Msg = { tag, injectedAt: clock() };
  s.msgs.set(tag, m);
  const body = `From: bench@tidemail.test\r\nTo: you@far.example\r\nSubject: link flap ${tag}\r\n` +
    `Message-ID: <${tag}.${process.pid}@bench.test>\r\nX-Tag: ${tag}\r\n\r\nlink-flap benchmark\r\n`;
  const p = sendMessage(s.port, 'bench@tidemail.test', ['you@far.example'], body).then(
    (r) => {
      m.reply = r;
      if (r.startsWith('250')) m.acceptedAt = clock();
    },
    (e: unknown) => void (m.reply = `error: ${(e as Error).message.split('\n')[0]}`),
  );
  s.inflight.add(p);
  void p.finally(() => s.inflight.delete(p));
}

// ---------------------------------------------------------------------------------------------
// Figures

interface Window {
  start: number;
  end: number;
}

interface Figures {
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

function figures(s: Subject, ups: number[], windows: Window[], synArrived: number, queuedAtEnd: number | null, drainedMs: number | null): Figures {
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

// ---------------------------------------------------------------------------------------------
// The run

export async function runLinkFlapBench(opts: LinkFlapOptions): Promise<LinkFlapResult> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`[link-flap ${new Date().toISOString().slice(11, 19)}] ${m}\n`));
  const date = new Date().toISOString();
  const cpus = os.cpus();
  const machine = `${cpus.length} core(s) ${cpus[0]?.model.trim() ?? ''}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
    `${os.type()} ${os.release()}, node ${process.version}`;
  const phases = makeSchedule(opts.seed, opts.minutes);
  const downs = phases.filter((p) => !p.up);
  const upsP = phases.filter((p) => p.up);
  const sum = (ps: Phase[]): number => ps.reduce((a, p) => a + p.lenS, 0);
  const schedule = `seed ${opts.seed}, ${opts.minutes} min: ${downs.length} carrier-down periods (${DOWN_S[0]}–${DOWN_S[1]} s, ` +
    `${sum(downs)} s in all), ${upsP.length} up periods (${UP_S[0]}–${UP_S[1]} s, ${sum(upsP)} s, ${LOSS_PERCENT} % loss both ways), ` +
    `starting down; one message every ${INJECT_EVERY_MS / 1000} s to each server; then link up without loss, ` +
    `drain for at most ${DRAIN_TIMEOUT_MS / 1000} s`;
  const how = `node dist/test/bench/link-flap.js --minutes ${opts.minutes} --seed ${opts.seed}`;
  const head = [`Link flaps (issue 14; test/bench/link-flap.ts), ${date}`, `machine: ${machine}`, `schedule: ${schedule}`];
  const skipped = (why: string): LinkFlapResult => ({
    lines: [...head, `skipped: ${why}`],
    markdown: [`Run ${date} on ${machine}: skipped: ${why}`, ''].join('\n'),
  });

  if (!canUseNetns()) return skipped('needs root and iproute2');
  if (!fs.existsSync(SMARTHOST_PROC)) return skipped(`${SMARTHOST_PROC} missing (build first)`);

  const v = createVethNamespace('lf', 79);
  const subjects: Subject[] = [];
  const undo: Array<() => void> = [() => v.teardown()];
  const undoAll = (): void => {
    while (undo.length) {
      try {
        undo.pop()!();
      } catch {
        // best effort
      }
    }
  };
  process.on('exit', undoAll); // a crash or Ctrl-C must not leave the namespace or nft tables behind
  const notes: string[] = [];
  try {
    if (!canUseNft(v)) return skipped('nft not usable in the namespace (install nftables)');
    const t0 = performance.now();
    const clock = (): number => performance.now() - t0;
    const syn = new SynCounters(v, [2525, 2526]);
    undo.push(() => syn.remove());

    // tidemail
    const farT = await startFarSide(v, 2525, clock);
    undo.push(() => farT.stop());
    const site = await makeSite();
    // BENCH_FLAP_ROUTE adds route lines for experiments (e.g. "max_connections = 5"); the
    // figures in RESULTS.md are with the defaults.
    site.route('far', `smarthost = "${v.farIp}:2525"\ntls = "none"\nonline.interface = "${v.hostIf}"\n${process.env.BENCH_FLAP_ROUTE ?? ''}\n`);
    const daemon: RunningDaemon = await startDaemon(site);
    undo.push(() => void daemon.proc.kill('SIGKILL'));
    subjects.push({
      name: 'tidemail',
      label: 'tidemail',
      port: site.port,
      far: farT,
      msgs: new Map(),
      inflight: new Set(),
      attemptsWhileDown: 0,
      // `tidemail status` prints "N queued" per route
      queued: async () => {
        const r = await runCli(['status', '--config', site.configPath]);
        const m = /(\d+) queued/.exec(r.stdout);
        return m ? Number(m[1]) : null;
      },
      stop: async () => void (await daemon.stop()),
    });

    // Postfix, when installed
    const { postfix: tools } = await findPostfix();
    if (!tools) notes.push('Postfix is not installed: no Postfix column.');
    else {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-flap-postfix-'));
      fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
      undo.push(() => fs.rmSync(dir, { recursive: true, force: true }));
      undo.push(() => abortPostfixSync(tools, dir));
      try {
        const farP = await startFarSide(v, 2526, clock);
        undo.push(() => farP.stop());
        const port = await freePort();
        const pf: PostfixInstance = await startPostfix(tools, dir, port, {
          relay: { host: v.farIp, port: 2526, minimalBackoff: '10s', maximalBackoff: '60s', queueRunDelay: '10s' },
        });
        if (!(await waitForSmtp('127.0.0.1', port, 30_000))) throw new Error(`smtpd on 127.0.0.1:${port} did not answer`);
        subjects.push({
          name: 'postfix',
          label: `Postfix ${tools.version}`,
          port,
          far: farP,
          msgs: new Map(),
          inflight: new Set(),
          attemptsWhileDown: 0,
          queued: async () => pf.queuedCount(),
          stop: () => pf.stop(),
        });
      } catch (e) {
        notes.push(`Postfix column skipped: ${(e as Error).message.split('\n')[0]}`);
      }
    }

    log(`${v.hostIf} <-> ${v.nsIf} (${v.ns}), far side ${v.farIp}; ${subjects.map((s) => `${s.label} on 127.0.0.1:${s.port}`).join(', ')}`);
    log(`schedule: ${schedule}`);

    // The schedule starts down: take the link down first and let the daemon notice, so the
    // first messages do not race the very first carrier loss.
    carrierDown(v);
    await daemon.waitForLog(/link down/, 10_000).catch(() => notes.push('tidemail logged no "link down" at the start'));

    // Drive the schedule against absolute deadlines (no drift) and inject every 2 s meanwhile.
    const start = clock();
    const ups: number[] = [];
    const windows: Window[] = [];
    let n = 0;
    let injecting = true;
    const injector = (async () => {
      for (; injecting; n++) {
        for (const s of subjects) inject(s, n, clock);
        const next = start + (n + 1) * INJECT_EVERY_MS;
        while (injecting && clock() < next) await sleep(Math.min(100, next - clock()));
      }
    })();
    const before = new Map<string, number>();
    let upSince: number | null = null;
    const goDown = (): void => {
      for (const s of subjects) before.set(s.name, syn.sent(s.far.port)); // before: the race at link-down counts
      carrierDown(v);
      if (upSince !== null) windows.push({ start: upSince, end: clock() });
      upSince = null;
    };
    const goUp = (loss: number): void => {
      for (const s of subjects) s.attemptsWhileDown += syn.sent(s.far.port) - (before.get(s.name) ?? 0);
      setLoss(v, loss); // loss first: no loss-free instant at link-up
      carrierUp(v);
      upSince = clock();
      ups.push(upSince);
    };
    for (const ph of phases) {
      const at = start + ph.startS * 1000;
      while (clock() < at) await sleep(Math.min(200, at - clock()));
      if (ph.up) goUp(LOSS_PERCENT);
      else goDown();
      log(`${ph.up ? 'up  ' : 'down'} ${String(ph.lenS).padStart(2)} s  (t=${ph.startS} s)` +
        subjects.map((s) => `  ${s.name} waiting ${waiting(s)}`).join(''));
    }
    const end = start + (phases.at(-1)!.startS + phases.at(-1)!.lenS) * 1000;
    while (clock() < end) await sleep(Math.min(200, end - clock()));
    injecting = false;
    await injector;
    // End of the schedule: close the last window, link up without loss, let the queues drain.
    if (upSince !== null) {
      windows.push({ start: upSince, end: clock() });
      setLoss(v, 0);
    } else goUp(0);
    const drainStart = clock();
    log(`schedule over; link up without loss, draining (at most ${DRAIN_TIMEOUT_MS / 1000} s)`);
    await Promise.all(subjects.flatMap((s) => [...s.inflight]));
    const drained = new Map<string, number | null>(subjects.map((s) => [s.name, null]));
    while (clock() - drainStart < DRAIN_TIMEOUT_MS && [...drained.values()].some((x) => x === null)) {
      for (const s of subjects) if (drained.get(s.name) === null && waiting(s) === 0) drained.set(s.name, clock() - drainStart);
      await sleep(100);
    }
    const all: Array<[Subject, Figures]> = [];
    for (const s of subjects) {
      all.push([s, figures(s, ups, windows, syn.arrived(s.far.port), await s.queued(), drained.get(s.name) ?? null)]);
    }
    log('stopping');
    for (const s of subjects) await s.stop();
    const dlog = daemon.logs();
    // BENCH_FLAP_DEBUG=DIR keeps the daemon's log and every message's story (reply, arrivals,
    // link-ups) for a look at duplicates and the slow tail.
    const debugDir = process.env.BENCH_FLAP_DEBUG;
    if (debugDir) {
      fs.mkdirSync(debugDir, { recursive: true });
      fs.writeFileSync(path.join(debugDir, 'tidemail.log'), dlog);
      const story = subjects.map((s) => ({ subject: s.name, msgs: [...s.msgs.values()].map((m) => ({ ...m, arrivals: s.far.arrivals.get(m.tag) ?? [] })) }));
      fs.writeFileSync(path.join(debugDir, 'messages.json'), JSON.stringify({ ups, windows, story }, null, 1));
    }
    const count = (re: RegExp): number => dlog.split('\n').filter((l) => re.test(l)).length;
    notes.push(`tidemail log: ${count(/link down/)} "link down", ${count(/link up/)} "link up", ` +
      `${count(/ETIMEDOUT|[Tt]imeout|timed out/)} timeout lines, ${count(/interrupted/)} "interrupted" lines`);
    return report(head, how, machine, date, schedule, all, notes);
  } finally {
    for (const s of subjects) await Promise.race([Promise.all([...s.inflight]), sleep(5000)]);
    undoAll();
    process.off('exit', undoAll);
    cleanupTmp();
  }
}

function waiting(s: Subject): number {
  let n = 0;
  for (const m of s.msgs.values()) if (m.acceptedAt !== undefined && !s.far.arrivals.has(m.tag)) n++;
  return n;
}

function report(head: string[], how: string, machine: string, date: string, schedule: string, all: Array<[Subject, Figures]>, notes: string[]): LinkFlapResult {
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

// ---------------------------------------------------------------------------------------------
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

// ---------------------------------------------------------------------------------------------
// Alone: node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]

if (import.meta.url === `file://${process.argv[1]}`) {
  const argv = process.argv.slice(2);
  const opt = (flag: string, env: string, dflt: string): string => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : (process.env[env] ?? dflt);
  };
  const minutes = Number(opt('--minutes', 'BENCH_FLAP_MINUTES', '10'));
  const seed = Number(opt('--seed', 'BENCH_FLAP_SEED', '14'));
  if (!(minutes > 0) || !Number.isInteger(seed)) {
    console.error('usage: node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]');
    process.exit(64);
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130)); // runs the exit cleanup
  const r = await runLinkFlapBench({ minutes, seed });
  console.log('\n' + r.lines.join('\n'));
  if (!argv.includes('--no-write')) {
    const file = resultsPath();
    const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# tidemail benchmark results\n';
    fs.writeFileSync(file, putLinkFlapSection(old, r.markdown));
    console.error(`wrote the "${SECTION_HEAD.slice(3)}" section of ${file}`);
  }
  process.exit(0);
}
