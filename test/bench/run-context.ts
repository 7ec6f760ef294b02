// What the parts of one `npm run bench` (run.ts) share: its options (flags or environment, see
// run.ts), the log, the cleanup registry that keeps children and the private Postfix from
// outliving the bench, and the results it collects (throughput cells, memory figures,
// problems, queue checks, notes), read at the end by run-report.ts.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProcMem } from './common.js';
import type { SmapsMem, TreeMem } from './smaps.js';
import { TARGETS } from './targets.js';

// dist/test/bench/run.js -> repository root (BENCH_ROOT overrides, e.g. for a build elsewhere)
export const ROOT = process.env.BENCH_ROOT ?? path.resolve(fileURLToPath(import.meta.url), '../../../..');

// ---------------------------------------------------------------------------------------------
// Options

const argv = process.argv.slice(2);
function opt(flag: string, env: string, dflt: string): string {
  const i = argv.indexOf(flag);
  if (i >= 0 && argv[i + 1] !== undefined) return argv[i + 1]!;
  return process.env[env] ?? dflt;
}
export const MESSAGES = Number(opt('--messages', 'BENCH_MESSAGES', '2000'));
export const SIZE = Number(opt('--size', 'BENCH_SIZE', '4096'));
export const CONCURRENCY = opt('--concurrency', 'BENCH_CONCURRENCY', '1,10,50').split(',').map(Number);
export const HUGE_MB = Number(opt('--huge-mb', 'BENCH_HUGE_MB', '50'));
export const ONLY = new Set(opt('--only', 'BENCH_ONLY', 'floor,tidemail,postfix').split(','));
export const CLIENTS = new Set(opt('--client', 'BENCH_CLIENT', 'smtp-source,smtp-source-1,node').split(','));
export const WRITE = !argv.includes('--no-write');
export const KEEP = argv.includes('--keep');
export const LINKS = !argv.includes('--no-links') && process.env.BENCH_LINKS !== '0';
export const LINK_FLAP = !argv.includes('--no-link-flap') && process.env.BENCH_LINK_FLAP !== '0';
export const FLAP_MINUTES = Number(opt('--flap-minutes', 'BENCH_FLAP_MINUTES', '10'));
export const FLAP_SEED = Number(opt('--flap-seed', 'BENCH_FLAP_SEED', '14'));
export const REPEAT = Math.max(1, Number(opt('--repeat', 'BENCH_REPEAT', '3')));
export const WARMUP = Math.min(200, MESSAGES); // messages sent before measuring (JIT, caches, first files)

// Targets from the issue (all of them, and the block that reports them: targets.ts).
export const TARGET_RATIO = TARGETS.ratio;
export const TARGET_IDLE_MIB = TARGETS.idleMiB;
export const TARGET_HUGE_GROWTH_MIB = TARGETS.hugeGrowthMiB;

// ---------------------------------------------------------------------------------------------
// Cleanup on exit / Ctrl-C: children and the private Postfix must not outlive the bench.

const cleanups: Array<() => void> = [];
export function cleanupNow(): void {
  while (cleanups.length) {
    try {
      cleanups.pop()!();
    } catch {
      // best effort
    }
  }
}

/** Register a cleanup; returns a function that runs it now and unregisters it. */
export function onCleanup(fn: () => void): () => void {
  cleanups.push(fn);
  return () => {
    const i = cleanups.indexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------------------------------------
// Results

/**
 * floor: the raw sink (sink.ts); floor+fsync: the same with one write + fdatasync per message;
 * engine: our SMTP engine storing nothing (stages.ts --serve); engine+fsync: with the fdatasync.
 */
export type Target = 'floor' | 'floor+fsync' | 'engine' | 'engine+fsync' | 'tidemail' | 'postfix';
/** The order of the rows in the report. */
export const TARGET_ROWS: readonly Target[] = ['floor', 'floor+fsync', 'engine', 'engine+fsync', 'tidemail', 'postfix'];
export type Client = 'smtp-source' | 'smtp-source-1' | 'node';

export interface Cell {
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

export const cells = new Map<string, Cell>(); // key `${target}|${client}|${c}`
export const key = (t: Target, cl: Client, c: number): string => `${t}|${cl}|${c}`;
export const problems: string[] = []; // things worth reporting (daemon misbehaviour, skipped parts)
export const checks: string[] = []; // sanity checks that passed or could not run (queue contents)
export const notes: string[] = [];

export interface HugeFigures {
  before: ProcMem;
  sampledMaxKiB: number;
  hwmAfterKiB: number | null; // VmHWM after a reset just before the send, if the reset worked
  accepted: boolean;
  reply: string;
  elapsedMs: number;
  bytesSent: number;
}

export interface MemoryFigures {
  nodeBaselineKiB?: number;
  /** RSS of plain node after importing one dependency of the daemon, per dependency */
  modules?: Array<{ name: string; rssKiB: number }>;
  idle?: ProcMem;
  afterLoad?: ProcMem;
  children?: number[];
  /** smaps of plain node, and of the daemon and its children at idle and after the load (run-memory.ts) */
  nodeSmaps?: SmapsMem;
  idleTree?: TreeMem;
  afterTree?: TreeMem;
  huge?: HugeFigures;
  /** the same with a smaller V8 young generation, to show where the growth comes from */
  hugeExperiment?: { nodeArgs: string[]; figures: HugeFigures };
}
export const mem: MemoryFigures = {};

/** The CPU part of a cell: what startMeters (run-measure.ts) reads after a run. */
export type CpuFigures = Pick<Cell, 'cpuMs' | 'mainThreadMs' | 'machineBusy' | 'machineProc' | 'clientMs'>;
