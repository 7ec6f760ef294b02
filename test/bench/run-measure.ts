// The client runners of `npm run bench` (run.ts): every subject warmed up, then MESSAGES
// messages per run at each concurrency with each client (smtp-source, smtp-source-1, the Node
// generator), the subjects taking turns run by run, with CPU meters around each run; the
// median of the repetitions is kept per cell.

import { CpuMeter, MachineMeter, selfAndChildrenCpuMs } from './common.js';
import { runLoad } from './load.js';
import { runSmtpSource } from './postfix.js';
import {
  CLIENTS, CONCURRENCY, MESSAGES, REPEAT, SIZE, WARMUP, cells, key, log, problems,
  type Cell, type Client, type CpuFigures,
} from './run-context.js';
import { cpuSummary } from './run-report.js';
import type { Subject } from './run-subjects.js';

/** The run with the median rate; the cell carries the first error seen in any repetition. */
function medianCell(runs: Cell[]): Cell {
  const sorted = [...runs].sort((x, y) => x.rate - y.rate);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const error = runs.find((r) => r.error)?.error ?? '';
  return { ...mid, error, spread: runs.length > 1 ? (sorted.at(-1)!.rate - sorted[0]!.rate) / mid.rate : 0 };
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
export async function measureAll(subjects: Subject[], smtpSource: string | null): Promise<void> {
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

function machine(m: { busy: number; proc: number } | null): Pick<Cell, 'machineBusy' | 'machineProc'> {
  return m ? { machineBusy: m.busy, machineProc: m.proc } : {};
}
