// tidemail benchmark: `npm run bench` (= tsc -p . && node packaging/bundle.mjs && node dist/test/bench/run.js).
//
// Measures messages/s accepted into the durable queue at several concurrencies, side by side for
//   floor     a raw SMTP sink in its own node process that stores nothing (sink.ts)
//   tidemail  the daemon (node bin/tidemail.js daemon: dist/bundle, or dist/src when tsc ran
//             after the bundle) with a private config
//   postfix   a private Postfix instance holding all mail in its queue (postfix.ts), if installed
// each driven by smtp-source (Postfix's load client, when installed) and by the Node generator
// (load.ts, which pipelines). All three run at the same time and take turns, run by run. Then the
// daemon's memory: idle RSS, peak RSS over the load, and RSS growth while a fresh daemon receives
// one 50 MB message. Also recorded: CPU use of server, client and the rest of the machine, and
// whether each queue holds exactly the messages that were accepted. Prints a report and writes
// test/bench/RESULTS.md.
//
// Options (flags or environment):
//   --messages N     BENCH_MESSAGES     messages per run               (2000)
//   --size BYTES     BENCH_SIZE         bytes per message              (4096)
//   --concurrency L  BENCH_CONCURRENCY  comma list of sessions         (1,10,50)
//   --repeat K       BENCH_REPEAT       runs per cell; the median is kept (3)
//   --huge-mb MB     BENCH_HUGE_MB      size of the big message        (50)
//   --only LIST      BENCH_ONLY         subset of floor,tidemail,postfix
//   --client LIST    BENCH_CLIENT       subset of smtp-source,smtp-source-1,node (all when available;
//                                       smtp-source-1 = one connection per message, no -d)
//   --no-write                          do not write RESULTS.md
//   --keep                              keep temp dirs (daemon logs, Postfix log) for inspection
//   --no-links       BENCH_LINKS=0      skip links.ts (link-up flush, idle CPU, local delivery)
//   --no-link-flap   BENCH_LINK_FLAP=0  skip link-flap.ts (issue 14; needs root and nft)
//   --flap-minutes M BENCH_FLAP_MINUTES length of the link-flap schedule  (10)
//   --flap-seed S    BENCH_FLAP_SEED    its PRNG seed                     (14)
//   BENCH_DAEMON_NODE_ARGS="..."        extra node options for the daemon only (V8 experiments)
//   BENCH_TARGETS_EXTRA=0               skip startup.ts and stages.ts (the issue-17 block's
//                                       sendmail and per-stage figures)
// The link-flap figures go into their own "Link flaps" section of RESULTS.md (link-flap.ts); when
// that bench is skipped, the section of the previous RESULTS.md is kept as it was.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  CpuMeter,
  MachineMeter,
  descendants,
  selfAndChildrenCpuMs,
  fmtMiB,
  freePort,
  nowMs,
  readProcMem,
  resetPeakRss,
  runCommand,
  sleep,
  type ProcMem,
} from './common.js';
import { runLoad, sendHugeMessage } from './load.js';
import { startSinkProcess } from './sink.js';
import {
  abortPostfixSync,
  findPostfix,
  runSmtpSource,
  startPostfix,
  type PostfixInstance,
  type PostfixTools,
} from './postfix.js';
import { cleanupTmp } from '../helpers/tmp.js';
import { runLinkBenches } from './links.js';
import { runCheckBenches } from './checks.js';
import { linkFlapSection, putLinkFlapSection, runLinkFlapBench } from './link-flap.js';
import { parseStages, parseStartup, targetLines, TARGETS, type AcceptanceCell, type TargetFigures } from './targets.js';
import {
  daemonEntry,
  daemonNodeArgs,
  shebangEnv,
  shebangNodeArgs,
  startTidemail,
  tidemailQueueCount,
  type Daemon,
} from './tidemail.js';

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
const CLIENTS = new Set(opt('--client', 'BENCH_CLIENT', 'smtp-source,smtp-source-1,node').split(','));
const WRITE = !argv.includes('--no-write');
const KEEP = argv.includes('--keep');
const LINKS = !argv.includes('--no-links') && process.env.BENCH_LINKS !== '0';
const LINK_FLAP = !argv.includes('--no-link-flap') && process.env.BENCH_LINK_FLAP !== '0';
const FLAP_MINUTES = Number(opt('--flap-minutes', 'BENCH_FLAP_MINUTES', '10'));
const FLAP_SEED = Number(opt('--flap-seed', 'BENCH_FLAP_SEED', '14'));
const REPEAT = Math.max(1, Number(opt('--repeat', 'BENCH_REPEAT', '3')));
const WARMUP = Math.min(200, MESSAGES); // messages sent before measuring (JIT, caches, first files)

// Targets from the issue (all of them, and the block that reports them: targets.ts).
const TARGET_RATIO = TARGETS.ratio;
const TARGET_IDLE_MIB = TARGETS.idleMiB;
const TARGET_HUGE_GROWTH_MIB = TARGETS.hugeGrowthMiB;

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
type Client = 'smtp-source' | 'smtp-source-1' | 'node';

interface Cell {
  rate: number;
  accepted: number;
  elapsedMs: number;
  error: string; // empty when all messages were accepted
  spread?: number; // (max - min) / median over the repetitions
  cpuMs?: number; // CPU time the server's processes used during the run
  mainThreadMs?: number; // CPU time of the server's main thread (tidemail: the JS thread)
  machineBusy?: number; // fraction of all cores busy during the run (client + server + rest)
  machineProc?: number; // fraction of all cores charged to processes (user + nice + system)
  clientMs?: number; // CPU time of the load client (this process or smtp-source)
}

const cells = new Map<string, Cell>(); // key `${target}|${client}|${c}`
const key = (t: Target, cl: Client, c: number): string => `${t}|${cl}|${c}`;
const problems: string[] = []; // things worth reporting (daemon misbehaviour, skipped parts)
const checks: string[] = []; // sanity checks that passed or could not run (queue contents)
const notes: string[] = [];

interface HugeFigures {
  before: ProcMem;
  sampledMaxKiB: number;
  hwmAfterKiB: number | null; // VmHWM after a reset just before the send, if the reset worked
  accepted: boolean;
  reply: string;
  elapsedMs: number;
  bytesSent: number;
}

interface MemoryFigures {
  nodeBaselineKiB?: number;
  /** RSS of plain node after importing one dependency of the daemon, per dependency */
  modules?: Array<{ name: string; rssKiB: number }>;
  idle?: ProcMem;
  afterLoad?: ProcMem;
  children?: number[];
  huge?: HugeFigures;
  /** the same with a smaller V8 young generation, to show where the growth comes from */
  hugeExperiment?: { nodeArgs: string[]; figures: HugeFigures };
}
const mem: MemoryFigures = {};

// ---------------------------------------------------------------------------------------------
// Measuring

/** The run with the median rate; the cell carries the first error seen in any repetition. */
function medianCell(runs: Cell[]): Cell {
  const sorted = [...runs].sort((x, y) => x.rate - y.rate);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const error = runs.find((r) => r.error)?.error ?? '';
  return { ...mid, error, spread: runs.length > 1 ? (sorted.at(-1)!.rate - sorted[0]!.rate) / mid.rate : 0 };
}

/** A server under test, up and listening. */
interface Subject {
  target: Target;
  port: number;
  /** the processes that make up the server (main one first), for CPU accounting */
  pids: () => number[];
  /** messages it accepted so far, warm-up included (compared with its queue at the end) */
  accepted: number;
  /** stop it and check / clean up; never throws */
  stop: () => Promise<void>;
}

/** Start CPU meters for one run; the returned function reads them. */
function startMeters(pids: () => number[]): () => CpuFigures {
  const main = pids()[0];
  const all = new CpuMeter(pids);
  const thread = main ? new CpuMeter(() => [main], true) : null;
  const box = new MachineMeter();
  const client0 = selfAndChildrenCpuMs();
  return () => ({
    cpuMs: all.diff(),
    mainThreadMs: thread?.diff(),
    ...machine(box.read()),
    clientMs: selfAndChildrenCpuMs() - client0,
  });
}

/** One run: MESSAGES messages at concurrency c against one subject with one client. */
async function runOnce(s: Subject, client: Client, c: number, rep: number, smtpSource: string | null): Promise<Cell> {
  const tag = `${s.target.padEnd(8)} c=${String(c).padEnd(3)}${REPEAT > 1 ? ` #${rep}` : ''} ${client.padEnd(11)}`;
  const stop = startMeters(s.pids);
  let cell: Cell;
  let extra = '';
  if (client === 'smtp-source' || client === 'smtp-source-1') {
    const r = await runSmtpSource(smtpSource!, s.port, MESSAGES, SIZE, c, 180_000, client === 'smtp-source');
    cell = { rate: r.rate, accepted: r.accepted, elapsedMs: r.elapsedMs, error: r.error, ...stop() };
  } else {
    const r = await runLoad({ host: '127.0.0.1', port: s.port, messages: MESSAGES, size: SIZE, concurrency: c });
    const error = r.failed ? `${r.failed} failed: ${r.errors.join(' | ')}` : '';
    cell = { rate: r.rate, accepted: r.accepted, elapsedMs: r.elapsedMs, error, ...stop() };
    if (r.pipelined) extra = ', pipelined';
  }
  s.accepted += cell.accepted;
  log(`${tag} ${cell.rate.toFixed(0).padStart(6)} msg/s (${cell.accepted}/${MESSAGES} in ` +
    `${(cell.elapsedMs / 1000).toFixed(2)} s${extra}; ${cpuSummary(cell, cell.elapsedMs)})` +
    (cell.error ? ' ERROR: ' + cell.error : ''));
  if (cell.error) problems.push(`${s.target}, ${client} c=${c}: ${cell.error}`);
  return cell;
}

/**
 * Warm every subject up, then measure. The targets take turns run by run (floor, tidemail,
 * postfix, floor, ...), so background load that comes and goes (this may be a shared machine)
 * hits all of them alike instead of skewing one row.
 */
async function measureAll(subjects: Subject[], smtpSource: string | null): Promise<void> {
  for (const s of subjects) {
    // Not measured: JIT, page cache, the first queue files / tables.
    const warm = await runLoad({ host: '127.0.0.1', port: s.port, messages: WARMUP, size: SIZE, concurrency: 10 });
    s.accepted += warm.accepted;
    if (warm.failed > 0) problems.push(`${s.target}: warm-up had ${warm.failed} failures: ${warm.errors.join(' | ')}`);
  }
  const clients: Client[] = [];
  if (smtpSource && CLIENTS.has('smtp-source')) clients.push('smtp-source');
  if (smtpSource && CLIENTS.has('smtp-source-1')) clients.push('smtp-source-1');
  if (CLIENTS.has('node') || clients.length === 0) clients.push('node');
  for (const c of CONCURRENCY) {
    const runs = new Map<string, Cell[]>();
    for (let rep = 1; rep <= REPEAT; rep++) {
      for (const s of subjects) {
        for (const client of clients) {
          const k = key(s.target, client, c);
          runs.set(k, [...(runs.get(k) ?? []), await runOnce(s, client, c, rep, smtpSource)]);
        }
      }
    }
    for (const [k, r] of runs) cells.set(k, medianCell(r));
  }
}

/** The floor: the raw sink in its own process. */
async function startFloor(): Promise<Subject> {
  const sink = await startSinkProcess(0);
  const unregister = onCleanup(() => process.kill(sink.pid, 'SIGKILL'));
  log(`floor: raw sink pid ${sink.pid} on 127.0.0.1:${sink.port}`);
  return {
    target: 'floor',
    port: sink.port,
    pids: () => [sink.pid],
    accepted: 0,
    stop: async () => {
      await sink.stop();
      unregister();
    },
  };
}

/** A private Postfix instance, or null (with a note) when that is not possible here. */
async function startPostfixSubject(tools: PostfixTools | null): Promise<Subject | null> {
  if (!tools) {
    notes.push('Postfix is not installed: no postfix row.');
    return null;
  }
  if (process.getuid?.() !== 0) {
    notes.push('Postfix row skipped: a private Postfix instance needs root (postfix -c DIR start).');
    return null;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-postfix-'));
  fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
  const port = await freePort();
  const cleanup = (): void => {
    if (KEEP) log(`postfix: kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onCleanup(() => {
    abortPostfixSync(tools, dir);
    cleanup();
  });
  let pf: PostfixInstance;
  try {
    pf = await startPostfix(tools, dir, port);
  } catch (e) {
    problems.push(`postfix: ${(e as Error).message}`);
    log(`postfix: FAILED ${(e as Error).message}`);
    unregister();
    cleanup();
    return null;
  }
  log(`postfix: private instance ${tools.version} in ${dir}, smtpd on 127.0.0.1:${port}, master pid ${pf.masterPid()}`);
  const subject: Subject = {
    target: 'postfix',
    port,
    pids: () => {
      const master = pf.masterPid();
      return master ? [master, ...descendants(master)] : [];
    },
    accepted: 0,
    stop: async () => {
      await sleep(500);
      const queued = pf.queuedCount();
      log(`postfix: ${queued} messages in its queue (held, not delivered); ${subject.accepted} were accepted`);
      checks.push(`postfix: ${queued} messages in its queue for ${subject.accepted} accepted` +
        (queued === subject.accepted ? ' (match)' : ''));
      if (queued !== subject.accepted) problems.push(`postfix: ${queued} messages queued but ${subject.accepted} accepted`);
      await pf.stop();
      unregister();
      cleanup();
    },
  };
  return subject;
}

/** A started daemon plus what it takes to stop it and clean up after it. */
interface RunningDaemon {
  daemon: Daemon;
  configPath: string;
  /** SIGTERM, record problems, run `afterStop` (daemon stopped, dir still there), remove the dir */
  finish(afterStop?: (configPath: string) => Promise<void>): Promise<void>;
}

async function launchDaemon(label: string, nodeArgs?: string[]): Promise<RunningDaemon> {
  const port = await freePort();
  const { daemon, dir, notes: startNotes } = await startTidemail(ROOT, port, { nodeArgs });
  // The same start-up note comes from every daemon start; keep one (ports differ, so compare
  // without digits).
  for (const n of startNotes) {
    const bare = (x: string): string => x.replace(/\d+/g, '');
    if (!notes.some((m) => bare(m) === bare(`tidemail: ${n}`))) notes.push(`tidemail: ${n}`);
  }
  log(`tidemail (${label}): pid ${daemon.pid} on 127.0.0.1:${port} as user "${daemon.user}"` +
    `${daemon.readyLogged() ? ', "daemon ready" logged' : ''}`);
  const unregister = onCleanup(() => {
    try {
      process.kill(daemon.pid, 'SIGKILL');
    } catch {
      // gone
    }
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
  });
  const configPath = path.join(dir, 'tidemail.toml');
  return {
    daemon,
    configPath,
    finish: async (afterStop) => {
      if (daemon.exited()) {
        problems.push(`tidemail (${label}): the daemon died during the run (${daemon.exitInfo()}); log tail:\n${daemon.logTail(15)}`);
      } else {
        const t0 = nowMs();
        const how = await daemon.stop();
        const ms = nowMs() - t0;
        if (how !== 'exit code 0') {
          problems.push(`tidemail (${label}): SIGTERM shutdown ended with "${how}" after ${ms.toFixed(0)} ms; log tail:\n${daemon.logTail(10)}`);
        } else {
          log(`tidemail (${label}): stopped (${how}) in ${ms.toFixed(0)} ms`);
        }
      }
      unregister();
      try {
        if (afterStop) await afterStop(configPath);
      } catch (e) {
        problems.push(`tidemail (${label}): ${(e as Error).message}`);
      }
      const errorLines = daemon.logTail(300).split('\n').filter((l) => /\b(error|fatal|uncaught|unhandled)\b/i.test(l));
      if (errorLines.length) {
        problems.push(`tidemail (${label}): ${errorLines.length} error-looking log lines, e.g.:\n  ${errorLines.slice(0, 3).join('\n  ')}`);
      }
      if (KEEP) log(`tidemail (${label}): kept ${dir} (daemon.log inside)`);
      else fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The daemon for the throughput runs. Its idle RSS is taken here (start + 2 s, before any
 * mail); stop() records the RSS after the load and checks that the queue holds every message
 * that was answered 250.
 */
async function startTidemailSubject(): Promise<Subject | null> {
  if (!daemonEntry(ROOT)) {
    notes.push('tidemail row skipped: dist/src/main.js does not exist yet.');
    return null;
  }
  let run: RunningDaemon;
  try {
    run = await launchDaemon('throughput');
  } catch (e) {
    problems.push(`tidemail: ${(e as Error).message}`);
    log(`tidemail: FAILED ${(e as Error).message}`);
    return null;
  }
  const d = run.daemon;
  await sleep(2000);
  mem.idle = readProcMem(d.pid) ?? undefined;
  log(`tidemail: idle RSS ${fmtMiB(mem.idle?.rssKiB ?? NaN)} (VmHWM so far ${fmtMiB(mem.idle?.hwmKiB ?? NaN)})`);
  const subject: Subject = {
    target: 'tidemail',
    port: d.port,
    pids: () => [d.pid, ...descendants(d.pid)],
    accepted: 0,
    stop: async () => {
      mem.afterLoad = readProcMem(d.pid) ?? undefined;
      mem.children = descendants(d.pid);
      log(`tidemail: after load RSS ${fmtMiB(mem.afterLoad?.rssKiB ?? NaN)}, peak (VmHWM) ${fmtMiB(mem.afterLoad?.hwmKiB ?? NaN)}`);
      await run.finish(async (configPath) => {
        const queued = await tidemailQueueCount(ROOT, configPath);
        if (queued === null) {
          checks.push('tidemail: could not read the queue size from `tidemail status` after the run');
          return;
        }
        log(`tidemail: ${queued} messages in its queue after stopping; ${subject.accepted} were accepted`);
        checks.push(`tidemail: ${queued} messages in its queue after SIGTERM for ${subject.accepted} accepted` +
          (queued === subject.accepted ? ' (match)' : ''));
        if (queued !== subject.accepted) {
          problems.push(`tidemail: ${queued} messages in the queue but ${subject.accepted} were accepted (250)`);
        }
      });
    },
  };
  return subject;
}

/** One huge message on a fresh daemon: how much its RSS grows. */
async function benchHugeMessage(nodeArgs?: string[]): Promise<HugeFigures | undefined> {
  if (!Number.isFinite(HUGE_MB) || HUGE_MB <= 0 || !daemonEntry(ROOT)) return undefined;
  const label = nodeArgs ? `huge message, node ${nodeArgs.join(' ')}` : 'huge message';
  let run: RunningDaemon;
  try {
    run = await launchDaemon(label, nodeArgs);
  } catch (e) {
    problems.push(`tidemail (${label}): ${(e as Error).message}`);
    return undefined;
  }
  const d = run.daemon;
  try {
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
    const huge: HugeFigures = {
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
      (huge.hwmAfterKiB !== null ? `, by VmHWM ${fmtMiB(huge.hwmAfterKiB - before.rssKiB)}` : ''));
    if (!r.accepted) problems.push(`tidemail: the ${HUGE_MB} MB message was not accepted: ${r.reply}`);
    // The daemon logs "accepted ... size=N"; N should be the un-stuffed size we generated.
    const size = /accepted .*\bsize=(\d+)/.exec(d.logTail(50))?.[1];
    if (r.accepted && size !== undefined && !nodeArgs) {
      const want = HUGE_MB * 1024 * 1024;
      checks.push(`tidemail: the ${HUGE_MB} MB message was logged with size=${size} for ${want} bytes sent before ` +
        `dot-stuffing${Number(size) === want ? ' (match)' : ''}`);
    }
    return huge;
  } catch (e) {
    problems.push(`tidemail (${label}): ${(e as Error).message}`);
    return undefined;
  } finally {
    await run.finish();
  }
}

/**
 * RSS of plain `node` after importing each runtime dependency of the package on its own (in
 * parallel child processes): where the daemon's idle RSS above plain node comes from.
 */
async function moduleFootprints(): Promise<Array<{ name: string; rssKiB: number }>> {
  let deps: string[] = [];
  try {
    deps = Object.keys(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).dependencies ?? {});
  } catch {
    return [];
  }
  // Each child imports one module, idles 1.5 s, then prints its own VmRSS (KiB); an import that
  // fails prints nothing and is left out.
  const one = async (name: string): Promise<{ name: string; rssKiB: number } | null> => {
    const code =
      `await import(${JSON.stringify(name)});` +
      `setTimeout(async () => { const fs = await import('node:fs');` +
      ` console.log(/VmRSS:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]); }, 1500);`;
    const r = await runCommand(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, timeoutMs: 20_000 });
    const kib = Number(r.stdout.trim());
    return r.code === 0 && kib > 0 ? { name, rssKiB: kib } : null;
  };
  const got = await Promise.all(deps.map(one));
  return got.filter((x): x is { name: string; rssKiB: number } => x !== null);
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

/** CPU ms over wall ms as a percentage of one core. */
function pct(cpuMs: number, wallMs: number): string {
  return wallMs > 0 ? `${((cpuMs / wallMs) * 100).toFixed(0)}%` : 'n/a';
}

type CpuFigures = Pick<Cell, 'cpuMs' | 'mainThreadMs' | 'machineBusy' | 'machineProc' | 'clientMs'>;

function machine(m: { busy: number; proc: number } | null): Pick<Cell, 'machineBusy' | 'machineProc'> {
  return m ? { machineBusy: m.busy, machineProc: m.proc } : {};
}

/**
 * CPU ms charged to other processes during a run (other users of the box): process time of the
 * whole machine minus the server and the client. Kernel softirq time (loopback TCP) is not in it.
 */
function otherMs(m: CpuFigures, wallMs: number): number | undefined {
  if (m.machineProc === undefined || m.cpuMs === undefined || m.clientMs === undefined) return undefined;
  return Math.max(0, m.machineProc * os.cpus().length * wallMs - m.cpuMs - m.clientMs);
}

function cpuSummary(m: CpuFigures, wallMs: number): string {
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
  for (const t of ['floor', 'tidemail', 'postfix'] as const) {
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
  if (mem.children?.length) rows.push(`  note: the daemon has child processes (${mem.children.join(', ')}), not counted`);
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
function targetFigures(cores: number, fsyncMs: number, extra: Pick<TargetFigures, 'stages' | 'startup'>): TargetFigures {
  const acceptance = (client: Client): AcceptanceCell[] => CONCURRENCY.flatMap((c) => {
    const t = cells.get(key('tidemail', client, c));
    const p = cells.get(key('postfix', client, c));
    if (!t || !p || !t.accepted || t.cpuMs === undefined) return [];
    const perMsg = (cpuMs: number) => (cpuMs * 1000) / t.accepted;
    return [{ c, tidemail: t.rate, postfix: p.rate, cpuUs: perMsg(t.cpuMs), ...(t.mainThreadMs !== undefined ? { jsUs: perMsg(t.mainThreadMs) } : {}), ...(t.machineBusy !== undefined ? { machineBusy: t.machineBusy } : {}) }];
  });
  const floorCpuUs: Record<number, number> = {};
  for (const c of CONCURRENCY) {
    const f = cells.get(key('floor', 'smtp-source', c));
    if (f?.accepted && f.cpuMs !== undefined) floorCpuUs[c] = (f.cpuMs * 1000) / f.accepted;
  }
  const base = mem.nodeBaselineKiB;
  return {
    fsyncMs, cores, floorCpuUs, ...extra,
    reused: acceptance('smtp-source'),
    oneConnection: acceptance('smtp-source-1'),
    ...(mem.idle ? { idle: {
      rssMiB: mem.idle.rssKiB / 1024,
      ...(base ? { nodeMiB: base / 1024 } : {}),
      imports: base ? (mem.modules ?? []).map((m) => ({ name: m.name, addMiB: (m.rssKiB - base) / 1024 })) : [],
    } } : {}),
    ...(mem.afterLoad ? { peak: { hwmMiB: mem.afterLoad.hwmKiB / 1024, concurrency: Math.max(...CONCURRENCY), ...(mem.idle ? { idleMiB: mem.idle.rssKiB / 1024 } : {}) } } : {}),
    ...(mem.huge ? { hugeGrowthMiB: hugeGrowthKiB(mem.huge) / 1024, hugeMiB: HUGE_MB } : {}),
  };
}

/** `sendmail -t` against `node -e 0` (startup.ts, 10 interleaved runs each). */
async function measureStartup(): Promise<TargetFigures['startup']> {
  const r = await runCommand(process.execPath, [path.join(ROOT, 'dist', 'test', 'bench', 'startup.js'), '--runs', '10'], { timeoutMs: 120_000 });
  const got = parseStartup(r.stdout);
  if (!got) log(`startup.js: no figures (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return got;
}

/** Per-stage CPU at c=1 (stages.ts, 1000 messages per stage); needs smtp-source. */
async function measureStages(): Promise<TargetFigures['stages']> {
  const r = await runCommand(process.execPath, [path.join(ROOT, 'dist', 'test', 'bench', 'stages.js'), '--messages', '1000'], { timeoutMs: 600_000 });
  const got = parseStages(r.stdout);
  if (!got?.length) log(`stages.js: no figures (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return got?.length ? got : undefined;
}

function report(machine: string[], limits: string[]): string[] {
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
function limitNotes(cores: number, fsyncMs: number): string[] {
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
      (postfix ? `, postfix ${postfix.version}` : ', postfix not installed') +
      `; load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `clients: ${smtpSource ? `smtp-source (${smtpSource})` : 'smtp-source not installed'}; test/bench/load.ts`,
  ];
  const entry = daemonEntry(ROOT);
  const deployedArgs = entry ? shebangNodeArgs(entry) : [];
  const daemonArgs = [...deployedArgs, ...daemonNodeArgs()];
  if (entry) {
    const envWords = Object.entries(shebangEnv(entry)).map(([k, v]) => `${k}=${v} `).join('');
    machine.push(`daemon: ${envWords}node ${[...daemonArgs, path.relative(ROOT, entry)].join(' ')} daemon --config ...` +
      (deployedArgs.length ? ' (options from the launcher\'s shebang' +
        (daemonNodeArgs().length ? ' and BENCH_DAEMON_NODE_ARGS)' : ')') : ''));
  }
  log(machine.join(' | '));
  if (!smtpSource) notes.push('smtp-source not found: only the Node load generator was used.');

  [mem.nodeBaselineKiB, mem.modules] = await Promise.all([nodeBaseline(), moduleFootprints()]);
  // Start every server first, then measure them taking turns; stop them all; then the big message.
  const subjects: Subject[] = [];
  try {
    if (ONLY.has('floor')) subjects.push(await startFloor());
    if (ONLY.has('tidemail')) {
      const t = await startTidemailSubject();
      if (t) subjects.push(t);
    }
    if (ONLY.has('postfix')) {
      const p = await startPostfixSubject(postfix);
      if (p) subjects.push(p);
    }
    await measureAll(subjects, smtpSource);
  } finally {
    for (const s of subjects) await s.stop();
  }
  if (ONLY.has('tidemail')) {
    mem.huge = await benchHugeMessage();
    // Experiment: repeat with small V8 semi-spaces (young generation; up to 16 MB each by
    // default on 64-bit). If the growth drops a lot, it is short-lived garbage rather than
    // buffered message data. Skipped when the daemon already runs with a semi-space setting.
    if (mem.huge && !daemonArgs.some((a) => a.startsWith('--max-semi-space-size'))) {
      const nodeArgs = ['--max-semi-space-size=2'];
      const figures = await benchHugeMessage(nodeArgs);
      if (figures) mem.hugeExperiment = { nodeArgs, figures };
    }
  }

  const lines = report(machine, limitNotes(cpus.length, fsyncMs));
  // For the issue-17 block at the end: this run's start-up and per-stage figures.
  const extra: Pick<TargetFigures, 'stages' | 'startup'> = {};
  if (daemonEntry(ROOT) && process.env.BENCH_TARGETS_EXTRA !== '0') {
    log('sendmail -t start-up (test/bench/startup.ts)');
    const startup = await measureStartup();
    if (startup) extra.startup = startup;
    if (smtpSource) {
      log('per-stage cost (test/bench/stages.ts)');
      const stages = await measureStages();
      if (stages) extra.stages = stages;
    }
  }

  // Links and local delivery (test/bench/links.ts, issues 4 and 5), after the acceptance figures.
  if (LINKS && daemonEntry(ROOT)) {
    log('links and local delivery (test/bench/links.ts)');
    try {
      lines.push('', ...(await runLinkBenches()).lines);
      lines.push('', ...(await (await import('./fetch.js')).runFetchBenches()).lines);
    } catch (e) {
      lines.push('', `links and local delivery: FAILED: ${(e as Error).message.split('\n')[0]}`);
      log(`links: FAILED ${(e as Error).message}`);
    } finally {
      if (!KEEP) cleanupTmp(); // the temp dirs the test helpers made for it
    }
  }
  if (daemonEntry(ROOT) && process.env.BENCH_CHECKS !== '0') {
    log('checks (test/bench/checks.ts)');
    try {
      lines.push('', ...(await runCheckBenches()).lines);
    } catch (e) {
      lines.push('', `checks: FAILED: ${(e as Error).message.split('\n')[0]}`);
    } finally {
      if (!KEEP) cleanupTmp();
    }
  }
  // Link flaps (issue 14): ten minutes of carrier loss and packet loss; its own RESULTS section.
  let flapMarkdown: string | null = null;
  if (LINK_FLAP && daemonEntry(ROOT)) {
    log(`link flaps (test/bench/link-flap.ts, ${FLAP_MINUTES} min, seed ${FLAP_SEED})`);
    try {
      const r = await runLinkFlapBench({ minutes: FLAP_MINUTES, seed: FLAP_SEED, log: (m) => log(`link-flap: ${m}`) });
      lines.push('', ...r.lines);
      flapMarkdown = r.markdown;
    } catch (e) {
      lines.push('', `link flaps: FAILED: ${(e as Error).message.split('\n')[0]}`);
      log(`link flaps: FAILED ${(e as Error).message}`);
    }
  }
  lines.push('', ...targetLines(targetFigures(cpus.length, fsyncMs, extra)));
  lines.push('', `bench run took ${((nowMs() - t0) / 1000).toFixed(0)} s`);
  console.log('\n' + lines.join('\n'));

  if (WRITE) {
    let md = [
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
    // Keep the previous file's "## " sections — Link flaps (its figures refreshed below), and
    // the soak, per-stage and start-up sections that their own scripts write (soak.ts,
    // stages.ts, startup.ts) — as they were.
    const prevText = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
    const firstSection = prevText.indexOf('\n## ');
    const previous = firstSection >= 0 ? prevText.slice(firstSection + 1) : linkFlapSection(prevText);
    if (previous) md = `${md.trimEnd()}\n\n${previous.trimEnd()}\n`;
    if (flapMarkdown) md = putLinkFlapSection(md, flapMarkdown);
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
