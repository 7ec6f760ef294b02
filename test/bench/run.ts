// tidemail benchmark: `npm run bench` (= tsc -p . && node dist/test/bench/run.js).
//
// Measures messages/s accepted into the durable queue at several concurrencies, side by side for
//   floor     a raw SMTP sink in its own node process that stores nothing (sink.ts)
//   tidemail  the daemon (dist/src/main.js daemon) with a private config and state dir
//   postfix   a private Postfix instance holding all mail in its queue (postfix.ts), if installed
// each driven by smtp-source (Postfix's load client, when installed) and by the Node generator
// (load.ts, which pipelines). Then the daemon's memory: idle RSS, peak RSS over the load, and RSS
// growth while it receives one 50 MB message. Prints a table and writes test/bench/RESULTS.md.
//
// Options (flags or environment):
//   --messages N     BENCH_MESSAGES     messages per run               (2000)
//   --size BYTES     BENCH_SIZE         bytes per message              (4096)
//   --concurrency L  BENCH_CONCURRENCY  comma list of sessions         (1,10,50)
//   --repeat K       BENCH_REPEAT       runs per cell; the median is kept (3)
//   --huge-mb MB     BENCH_HUGE_MB      size of the big message        (50)
//   --only LIST      BENCH_ONLY         subset of floor,tidemail,postfix
//   --client LIST    BENCH_CLIENT       subset of smtp-source,node     (both when available)
//   --no-write                          do not write RESULTS.md
//   --keep                              keep temp dirs (daemon logs, Postfix log) for inspection

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  descendants,
  fmtMiB,
  freePort,
  nowMs,
  readProcMem,
  resetPeakRss,
  sleep,
  type ProcMem,
} from './common.js';
import { runLoad, sendHugeMessage } from './load.js';
import { startSinkProcess } from './sink.js';
import { abortPostfixSync, findPostfix, runSmtpSource, startPostfix, type PostfixTools } from './postfix.js';
import { daemonEntry, startTidemail, type Daemon } from './tidemail.js';

// dist/test/bench/run.js -> repository root (BENCH_ROOT overrides, e.g. for a build elsewhere)
const ROOT = process.env.BENCH_ROOT ?? path.resolve(fileURLToPath(import.meta.url), '../../../..');

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
function opt(flag: string, env: string, dflt: string): string {
  const i = argv.indexOf(flag);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1]!;
  return process.env[env] ?? dflt;
}
const MESSAGES = Number(opt('--messages', 'BENCH_MESSAGES', '2000'));
const SIZE = Number(opt('--size', 'BENCH_SIZE', '4096'));
const CONCURRENCY = opt('--concurrency', 'BENCH_CONCURRENCY', '1,10,50').split(',').map(Number);
const HUGE_MB = Number(opt('--huge-mb', 'BENCH_HUGE_MB', '50'));
const ONLY = new Set(opt('--only', 'BENCH_ONLY', 'floor,tidemail,postfix').split(','));
const CLIENTS = new Set(opt('--client', 'BENCH_CLIENT', 'smtp-source,node').split(','));
const WRITE = !argv.includes('--no-write');
const KEEP = argv.includes('--keep');
const REPEAT = Math.max(1, Number(opt('--repeat', 'BENCH_REPEAT', '3')));
const WARMUP = Math.min(200, MESSAGES); // messages sent before measuring (JIT, caches, first files)

// Targets from the issue.
const TARGET_RATIO = 1.5;
const TARGET_IDLE_MIB = 45;
const TARGET_HUGE_GROWTH_MIB = 16;

// ---------------------------------------------------------------------------------------------
// Cleanup on exit / Ctrl-C: children and the private Postfix must not outlive the bench.

const cleanups: Array<() => void> = [];
function cleanupNow(): void {
  while (cleanups.length) {
    try {
      cleanups.pop()!();
    } catch {
      // best effort
    }
  }
}
process.on('exit', cleanupNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    cleanupNow();
    process.exit(130);
  });
}
/** Register a cleanup; returns a function that runs it now and unregisters it. */
function onCleanup(fn: () => void): () => void {
  cleanups.push(fn);
  return () => {
    const i = cleanups.indexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Results

type Target = 'floor' | 'tidemail' | 'postfix';
type Client = 'smtp-source' | 'node';

interface Cell {
  rate: number;
  accepted: number;
  elapsedMs: number;
  error: string; // empty when all messages were accepted
  spread?: number; // (max - min) / median over the repetitions
}

const cells = new Map<string, Cell>(); // key `${target}|${client}|${c}`
const key = (t: Target, cl: Client, c: number): string => `${t}|${cl}|${c}`;
const problems: string[] = []; // things worth reporting (daemon misbehaviour, skipped parts)
const notes: string[] = [];

interface MemoryFigures {
  nodeBaselineKiB?: number;
  idle?: ProcMem;
  afterLoad?: ProcMem;
  children?: number[];
  huge?: {
    before: ProcMem;
    sampledMaxKiB: number;
    hwmAfterKiB: number | null; // VmHWM after a reset just before the send, if the reset worked
    accepted: boolean;
    reply: string;
    elapsedMs: number;
    bytesSent: number;
  };
}
const mem: MemoryFigures = {};

// ---------------------------------------------------------------------------------------------
// Measuring one target

/** The run with the median rate; the cell carries the first error seen in any repetition. */
function medianCell(runs: Cell[]): Cell {
  const sorted = [...runs].sort((x, y) => x.rate - y.rate);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const error = runs.find((r) => r.error)?.error ?? '';
  return { ...mid, error, spread: runs.length > 1 ? (sorted.at(-1)!.rate - sorted[0]!.rate) / mid.rate : 0 };
}

async function measure(target: Target, port: number, smtpSource: string | null): Promise<void> {
  // Warm-up (not measured): JIT, page cache, the first queue files / tables.
  const warm = await runLoad({ host: '127.0.0.1', port, messages: WARMUP, size: SIZE, concurrency: 10 });
  if (warm.failed > 0) problems.push(`${target}: warm-up had ${warm.failed} failures: ${warm.errors.join(' | ')}`);
  const useSource = smtpSource !== null && CLIENTS.has('smtp-source');
  const useNode = CLIENTS.has('node') || !useSource;
  for (const c of CONCURRENCY) {
    const sourceRuns: Cell[] = [];
    const nodeRuns: Cell[] = [];
    // Repetitions alternate the two clients so slow drift (e.g. a growing queue) hits both alike.
    for (let rep = 1; rep <= REPEAT; rep++) {
      const tag = `${target.padEnd(8)} c=${String(c).padEnd(3)}${REPEAT > 1 ? ` #${rep}` : ''}`;
      if (useSource) {
        const r = await runSmtpSource(smtpSource!, port, MESSAGES, SIZE, c);
        sourceRuns.push({ rate: r.rate, accepted: r.accepted, elapsedMs: r.elapsedMs, error: r.error });
        log(`${tag} smtp-source ${r.rate.toFixed(0).padStart(6)} msg/s ` +
          `(${r.accepted}/${MESSAGES} in ${(r.elapsedMs / 1000).toFixed(2)} s)${r.error ? ' ERROR: ' + r.error : ''}`);
        if (r.error) problems.push(`${target}, smtp-source c=${c}: ${r.error}`);
      }
      if (useNode) {
        const r = await runLoad({ host: '127.0.0.1', port, messages: MESSAGES, size: SIZE, concurrency: c });
        const error = r.failed ? `${r.failed} failed: ${r.errors.join(' | ')}` : '';
        nodeRuns.push({ rate: r.rate, accepted: r.accepted, elapsedMs: r.elapsedMs, error });
        log(`${tag} node load   ${r.rate.toFixed(0).padStart(6)} msg/s ` +
          `(${r.accepted}/${MESSAGES} in ${(r.elapsedMs / 1000).toFixed(2)} s${r.pipelined ? ', pipelined' : ''})` +
          `${error ? ' ERROR: ' + error : ''}`);
        if (error) problems.push(`${target}, node load c=${c}: ${error}`);
      }
    }
    if (sourceRuns.length) cells.set(key(target, 'smtp-source', c), medianCell(sourceRuns));
    if (nodeRuns.length) cells.set(key(target, 'node', c), medianCell(nodeRuns));
  }
}

async function benchFloor(smtpSource: string | null): Promise<void> {
  log('floor: starting the raw sink in a child process');
  const sink = await startSinkProcess(0);
  const unregister = onCleanup(() => process.kill(sink.pid, 'SIGKILL'));
  try {
    await measure('floor', sink.port, smtpSource);
  } finally {
    await sink.stop();
    unregister();
  }
}

async function benchPostfix(tools: PostfixTools | null, smtpSource: string | null): Promise<void> {
  if (!tools) {
    notes.push('Postfix is not installed: no postfix row.');
    return;
  }
  if (process.getuid?.() !== 0) {
    notes.push('Postfix row skipped: a private Postfix instance needs root (postfix -c DIR start).');
    return;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-postfix-'));
  fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
  const port = await freePort();
  log(`postfix: private instance ${tools.version} in ${dir}, smtpd on 127.0.0.1:${port}`);
  const unregister = onCleanup(() => {
    abortPostfixSync(tools, dir);
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
  });
  try {
    const pf = await startPostfix(tools, dir, port);
    try {
      await measure('postfix', port, smtpSource);
      await sleep(500);
      log(`postfix: ${pf.queuedCount()} messages in its queue (held, not delivered)`);
    } finally {
      await pf.stop();
    }
  } catch (e) {
    problems.push(`postfix: ${(e as Error).message}`);
    log(`postfix: FAILED ${(e as Error).message}`);
  } finally {
    unregister();
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
    else log(`postfix: kept ${dir}`);
  }
}

/** Start a daemon, registering emergency cleanup; returns it with a stop-and-clean function. */
async function withDaemon<T>(label: string, fn: (d: Daemon) => Promise<T>): Promise<T> {
  const port = await freePort();
  const { daemon, dir, notes: startNotes } = await startTidemail(ROOT, port);
  for (const n of startNotes) if (!notes.includes(`tidemail: ${n}`)) notes.push(`tidemail: ${n}`);
  log(`tidemail (${label}): pid ${daemon.pid} on 127.0.0.1:${port} as user "${daemon.user}"` +
    `${daemon.readyLogged() ? ', "daemon ready" logged' : ''}`);
  const unregister = onCleanup(() => {
    try {
      process.kill(daemon.pid, 'SIGKILL');
    } catch {
      // gone
    }
  });
  try {
    return await fn(daemon);
  } finally {
    if (daemon.exited()) {
      problems.push(`tidemail (${label}): the daemon died during the run (${daemon.exitInfo()}); log tail:\n${daemon.logTail(15)}`);
    } else {
      const t0 = nowMs();
      const how = await daemon.stop();
      const ms = nowMs() - t0;
      if (how !== 'exit code 0' && !how.startsWith('signal SIGTERM')) {
        problems.push(`tidemail (${label}): SIGTERM shutdown ended with "${how}" after ${ms.toFixed(0)} ms; log tail:\n${daemon.logTail(10)}`);
      } else {
        log(`tidemail (${label}): stopped (${how}) in ${ms.toFixed(0)} ms`);
      }
    }
    unregister();
    const errorLines = daemon.logTail(300).split('\n').filter((l) => /\b(error|fatal|uncaught|unhandled)\b/i.test(l));
    if (errorLines.length) {
      problems.push(`tidemail (${label}): ${errorLines.length} error-looking log lines, e.g.:\n  ${errorLines.slice(0, 3).join('\n  ')}`);
    }
    if (KEEP) log(`tidemail (${label}): kept ${dir} (daemon.log inside)`);
    else fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function benchTidemail(smtpSource: string | null): Promise<void> {
  if (!daemonEntry(ROOT)) {
    notes.push('tidemail row skipped: dist/src/main.js does not exist yet.');
    return;
  }
  try {
    // Throughput + idle/peak RSS.
    await withDaemon('throughput', async (d) => {
      await sleep(2000);
      mem.idle = readProcMem(d.pid) ?? undefined;
      log(`tidemail: idle RSS ${fmtMiB(mem.idle?.rssKiB ?? NaN)} (VmHWM so far ${fmtMiB(mem.idle?.hwmKiB ?? NaN)})`);
      await measure('tidemail', d.port, smtpSource);
      mem.afterLoad = readProcMem(d.pid) ?? undefined;
      mem.children = descendants(d.pid);
      log(`tidemail: after load RSS ${fmtMiB(mem.afterLoad?.rssKiB ?? NaN)}, peak (VmHWM) ${fmtMiB(mem.afterLoad?.hwmKiB ?? NaN)}`);
    });
  } catch (e) {
    problems.push(`tidemail throughput: ${(e as Error).message}`);
    log(`tidemail: FAILED ${(e as Error).message}`);
  }
  if (!Number.isFinite(HUGE_MB) || HUGE_MB <= 0) return;
  try {
    // One huge message on a fresh daemon: RSS growth.
    await withDaemon('huge message', async (d) => {
      await sleep(2000);
      const before = readProcMem(d.pid);
      if (!before) throw new Error('cannot read /proc/<pid>/status of the daemon');
      const hwmReset = resetPeakRss(d.pid);
      let sampledMax = before.rssKiB;
      const timer = setInterval(() => {
        const m = readProcMem(d.pid);
        if (m && m.rssKiB > sampledMax) sampledMax = m.rssKiB;
      }, 50);
      log(`tidemail: sending one ${HUGE_MB} MB message (RSS before ${fmtMiB(before.rssKiB)})`);
      const r = await sendHugeMessage({ host: '127.0.0.1', port: d.port, bytes: HUGE_MB * 1024 * 1024 });
      await sleep(1000); // whatever the daemon does right after the 250 counts too
      clearInterval(timer);
      const after = readProcMem(d.pid);
      mem.huge = {
        before,
        sampledMaxKiB: sampledMax,
        hwmAfterKiB: hwmReset && after ? after.hwmKiB : null,
        accepted: r.accepted,
        reply: r.reply,
        elapsedMs: r.elapsedMs,
        bytesSent: r.bytesSent,
      };
      log(`tidemail: huge message ${r.accepted ? 'accepted' : 'NOT accepted'} in ${(r.elapsedMs / 1000).toFixed(2)} s ` +
        `(${r.reply}); RSS growth sampled ${fmtMiB(sampledMax - before.rssKiB)}` +
        (mem.huge.hwmAfterKiB !== null ? `, by VmHWM ${fmtMiB(mem.huge.hwmAfterKiB - before.rssKiB)}` : ''));
      if (!r.accepted) problems.push(`tidemail: the ${HUGE_MB} MB message was not accepted: ${r.reply}`);
    });
  } catch (e) {
    problems.push(`tidemail huge message: ${(e as Error).message}`);
    log(`tidemail: FAILED ${(e as Error).message}`);
  }
}

/** RSS of a plain `node` process doing nothing, as the reference for the idle target. */
async function nodeBaseline(): Promise<number | undefined> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
  await sleep(2000);
  const m = child.pid ? readProcMem(child.pid) : null;
  child.kill('SIGKILL');
  return m?.rssKiB;
}

/** Median latency of write(4 KiB) + fdatasync in the temp dir: the price of one durable commit. */
function fsyncLatencyMs(): number {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-fsync-'));
  const file = path.join(dir, 'f');
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(4096, 120);
  const times: number[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      const t0 = nowMs();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      times.push(nowMs() - t0);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

// ---------------------------------------------------------------------------------------------
// Report

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
  for (const t of ['floor', 'tidemail', 'postfix'] as const) {
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
  return rows;
}

/** Per target: the largest (max - min) / median over its cells, as a percentage. */
function spreads(): string {
  const parts: string[] = [];
  for (const t of ['floor', 'tidemail', 'postfix'] as const) {
    const s = [...cells.entries()].filter(([k]) => k.startsWith(t + '|')).map(([, c]) => c.spread ?? 0);
    if (s.length) parts.push(`${t} ${(Math.max(...s) * 100).toFixed(0)}%`);
  }
  return parts.join(', ');
}

const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');

function memoryLines(): string[] {
  const rows: string[] = ['memory (tidemail daemon; VmRSS / VmHWM from /proc/<pid>/status; MB = MiB)'];
  const line = (label: string, value: string, extra = ''): void => {
    rows.push('  ' + label.padEnd(34) + value.padStart(9) + (extra ? '   ' + extra : ''));
  };
  if (mem.nodeBaselineKiB) line('plain `node` idle RSS (reference)', fmtMiB(mem.nodeBaselineKiB));
  if (mem.idle) {
    line('idle RSS (start + 2 s)', fmtMiB(mem.idle.rssKiB),
      `target <= ${TARGET_IDLE_MIB} MB: ${verdict(mem.idle.rssKiB / 1024 <= TARGET_IDLE_MIB)}`);
  }
  if (mem.afterLoad) {
    line('peak RSS over all runs (VmHWM)', fmtMiB(mem.afterLoad.hwmKiB));
    line('RSS after the load', fmtMiB(mem.afterLoad.rssKiB));
  }
  if (mem.children?.length) rows.push(`  note: the daemon has child processes (${mem.children.join(', ')}), not counted`);
  if (mem.huge) {
    const h = mem.huge;
    const growth = h.sampledMaxKiB - h.before.rssKiB;
    const hwmGrowth = h.hwmAfterKiB !== null ? h.hwmAfterKiB - h.before.rssKiB : null;
    const worst = Math.max(growth, hwmGrowth ?? -Infinity);
    line(`${HUGE_MB} MB message: RSS before`, fmtMiB(h.before.rssKiB));
    line(`${HUGE_MB} MB message: RSS growth`, fmtMiB(worst),
      `target <= ${TARGET_HUGE_GROWTH_MIB} MB: ${verdict(worst / 1024 <= TARGET_HUGE_GROWTH_MIB)}`);
    rows.push(`    (max of: sampled every 50 ms ${fmtMiB(growth)}` +
      (hwmGrowth !== null ? `, VmHWM after reset ${fmtMiB(hwmGrowth)}` : ', VmHWM reset not possible') + ')');
    rows.push(`    ${h.accepted ? 'accepted' : 'NOT accepted'} in ${(h.elapsedMs / 1000).toFixed(2)} s ` +
      `(${(h.bytesSent / 1048576 / (h.elapsedMs / 1000)).toFixed(0)} MB/s): ${h.reply}`);
  }
  return rows;
}

function report(machine: string[], limits: string[]): string[] {
  const out: string[] = [];
  out.push(...machine, '');
  out.push(`${MESSAGES} messages x ${SIZE} bytes per run; messages/s accepted (250 after DATA); higher is better;`);
  out.push(`each figure is the median of ${REPEAT} run(s) after a ${WARMUP}-message warm-up; run-to-run spread (max-min)/median up to: ${spreads()}.`);
  out.push('"!" = not every message was accepted in that run (see problems).', '');
  const hasSource = [...cells.keys()].some((k) => k.includes('|smtp-source|'));
  if (hasSource) out.push(...table('smtp-source', 'client: smtp-source -d (Postfix load client, no pipelining)'), '');
  if ([...cells.keys()].some((k) => k.includes('|node|'))) {
    out.push(...table('node', 'client: test/bench/load.ts (Node, PIPELINING when advertised)'), '');
  }
  out.push(...memoryLines());
  if (problems.length) out.push('', 'problems:', ...problems.map((p) => '  - ' + p.replace(/\n/g, '\n    ')));
  if (notes.length) out.push('', 'notes:', ...notes.map((n) => '  - ' + n));
  if (limits.length) out.push('', 'what limits the figures:', ...limits.map((n) => '  - ' + n));
  return out;
}

/** Observations computed from this run's numbers. */
function limitNotes(cores: number, fsyncMs: number): string[] {
  const out: string[] = [];
  out.push(`${cores} CPU core(s) shared by the load client, the server under test and (for Postfix) its helper ` +
    'processes; figures on a router-class box will be lower and the ratios may differ.');
  out.push(`One write(4 KiB)+fdatasync in ${os.tmpdir()} takes ${fsyncMs.toFixed(2)} ms (median of 100), so a ` +
    `server that fsyncs each message by itself tops out near ${(1000 / fsyncMs).toFixed(0)} msg/s per session; ` +
    'at c=1 no group commit is possible, so tidemail and Postfix both pay this once per message.');
  for (const client of ['smtp-source', 'node'] as const) {
    const f = cells.get(key('floor', client, 50));
    const t = cells.get(key('tidemail', client, 50));
    const p = cells.get(key('postfix', client, 50));
    if (f && t) {
      out.push(`${client}: at c=50 tidemail reaches ${((t.rate / f.rate) * 100).toFixed(0)}% of the floor ` +
        `(${f.rate.toFixed(0)} msg/s, which is the client + loopback + one Node event loop doing nothing)` +
        (p ? `; Postfix reaches ${((p.rate / f.rate) * 100).toFixed(0)}%.` : '.'));
    }
  }
  out.push('smtp-source does not pipeline: every command costs a round trip, which is the same for all ' +
    'three servers; the Node client pipelines MAIL/RCPT/DATA when the server offers PIPELINING.');
  out.push('Postfix runs with its stock process model (one smtpd per session, cleanup writes and fsyncs ' +
    'one queue file per message); mail is put on hold, so no queue manager work competes with it.');
  return out;
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const t0 = nowMs();
  const cpus = os.cpus();
  const { postfix, smtpSource } = await findPostfix();
  const fsyncMs = fsyncLatencyMs();
  const machine = [
    `tidemail benchmark, ${new Date().toISOString()}`,
    `machine: ${cpus.length} core(s) ${cpus[0]?.model.trim() ?? ''}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
      `${os.type()} ${os.release()}, node ${process.version}` +
      (postfix ? `, postfix ${postfix.version}` : ', postfix not installed'),
    `clients: ${smtpSource ? `smtp-source (${smtpSource})` : 'smtp-source not installed'}; test/bench/load.ts`,
  ];
  log(machine.join(' | '));
  if (!smtpSource) notes.push('smtp-source not found: only the Node load generator was used.');

  mem.nodeBaselineKiB = await nodeBaseline();
  if (ONLY.has('floor')) await benchFloor(smtpSource);
  if (ONLY.has('tidemail')) await benchTidemail(smtpSource);
  if (ONLY.has('postfix')) await benchPostfix(postfix, smtpSource);

  const lines = report(machine, limitNotes(cpus.length, fsyncMs));
  lines.push('', `bench run took ${((nowMs() - t0) / 1000).toFixed(0)} s`);
  console.log('\n' + lines.join('\n'));

  if (WRITE) {
    const md = [
      '# tidemail benchmark results',
      '',
      'Written by `npm run bench` (test/bench/run.ts); rerun to refresh. Issue targets: at least ' +
        `${TARGET_RATIO}x Postfix's rate at each concurrency, idle RSS <= ${TARGET_IDLE_MIB} MB, ` +
        `RSS growth <= ${TARGET_HUGE_GROWTH_MIB} MB for one ${HUGE_MB} MB message.`,
      '',
      '```',
      ...lines,
      '```',
      '',
    ].join('\n');
    const out = path.join(ROOT, 'test', 'bench', 'RESULTS.md');
    fs.writeFileSync(out, md);
    log(`wrote ${path.relative(process.cwd(), out) || out}`);
  }
}

main().then(
  () => {
    cleanupNow();
    process.exit(0);
  },
  (e: unknown) => {
    console.error(e);
    cleanupNow();
    process.exit(1);
  },
);
