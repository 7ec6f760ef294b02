// The last block of `npm run bench`: each issue-17 target with this run's figure, met or
// missed, and for a miss the reason computed from this run's own measurements and the next
// step. Pure formatting over the figures run.ts collected (unit-tested in targets.test.ts).

export const TARGETS = {
  ratio: 1.5, // × Postfix's accepted msg/s, at every concurrency, with and without -d
  cpuUs: 400, // daemon CPU per accepted message
  idleMiB: 45,
  peakMiB: 80, // at c=50
  hugeGrowthMiB: 16, // one 50 MB message
  startupRatio: 1.3, // sendmail -t against node -e 0
};

/** One acceptance cell: tidemail and Postfix with one client at one concurrency. */
export interface AcceptanceCell {
  c: number;
  tidemail: number; // msg/s
  postfix: number;
  /** Daemon CPU (all threads) and its JS thread, µs per accepted message. */
  cpuUs: number;
  jsUs?: number;
  /** Fraction of all cores busy during the run. */
  machineBusy?: number;
  /**
   * The floors of the same run, client and concurrency, msg/s: the raw Node sink, the same with
   * one fdatasync per message, our engine storing nothing, and that with the fdatasync.
   */
  floors?: { sink?: number; sinkFsync?: number; engine?: number; engineFsync?: number };
}

export interface TargetFigures {
  fsyncMs: number;
  cores: number;
  /** smtp-source -d (connections reused) and without -d (one connection per message). */
  reused: AcceptanceCell[];
  oneConnection: AcceptanceCell[];
  /** The floor's CPU per message (a Node SMTP sink that stores nothing), by concurrency, -d. */
  floorCpuUs: Record<number, number>;
  /** Our engine storing nothing (the "engine" floor): CPU µs per message by concurrency. */
  engineCpuUs?: { reused: Record<number, number>; oneConnection: Record<number, number> };
  /** stages.ts at c=1, one connection per message: stage name → CPU µs per message. */
  stages?: Array<{ stage: string; cpuUs: number }>;
  idle?: { rssMiB: number; nodeMiB?: number; imports: Array<{ name: string; addMiB: number }>; split?: IdleSplit };
  peak?: { hwmMiB: number; idleMiB?: number; concurrency: number };
  hugeGrowthMiB?: number;
  hugeMiB?: number;
  startup?: { sendmailMs: number; nodeMs: number; sendmailPeakMiB?: number; nodePeakMiB?: number };
}

/** The idle daemon's and plain node's RSS by smaps (run-memory.ts): node's binary pages and the rest, USS. */
export interface IdleSplit {
  rssMiB: number;
  binaryMiB: number;
  ussMiB: number;
  node: { rssMiB: number; binaryMiB: number; ussMiB: number };
  /** the privsep helper, a second node process the daemon forks (not in the daemon's RSS) */
  helper?: { rssMiB: number; ussMiB: number };
  /** PSS summed over the daemon and its children */
  treePssMiB: number;
}

/** What the idle daemon imports of its npm dependencies (DESIGN-NOTES "Idle memory"): nodemailer's helpers come with smtp-server. */
export const IDLE_IMPORTS = ['sqlite3', 'smol-toml'];

const NEXT = {
  acceptance: 'at c=1 a message is its round trips and its own durable commit one after the other (test/bench/steps.js times each command against Postfix and the floors): the SQLite commit (~12 WAL frames per message) is most of what is ours, so fewer pages per message next (WITHOUT ROWID tables and a partial origin index: 12 -> 9 frames measured); at c=10/50 cut daemon CPU per message',
  cpu: 'the own receive engine (src/smtp/wire) took smtp-server out; what is left per message is the intake pipeline and the queue commit (the "+ commit" stage): a lighter commit path next',
  idle: 'smtp-server, http/https/zlib/tls and ICU collation no longer load at idle; what is left is node\'s own pages, sqlite3 and our code: a smaller node (--lite-mode, as on OpenWrt) next',
  idleBinary: 'node\'s binary pages are clean and shared (the kernel drops them first); of ours, the V8 heap (young generation 4 MB at --max-semi-space-size=2) and sqlite3: --lite-mode (as on OpenWrt) takes ~5 MB of binary pages, at ~40% of the rate',
  peak: 'lower idle first (the peak rides on it), then bound the heap under load (old-generation size)',
  huge: 'bound the spool and writer buffers per session (they grow with the chunk size)',
  startup: 'import less before the maildrop write (measure the module list of sendmail -t); Node 22\'s compile cache when the minimum Node moves',
};

const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);
const ms = (us: number) => (us / 1000).toFixed(2);

/** "0.81/1.39/1.56x at c=1/10/50" */
function ratios(cells: AcceptanceCell[]): string {
  return `${cells.map((x) => (x.postfix > 0 ? (x.tidemail / x.postfix).toFixed(2) : '-')).join('/')}x at c=${cells.map((x) => x.c).join('/')}`;
}

/**
 * What the floors of the same run leave of the budget: per message, the raw Node sink, + one
 * fdatasync, our engine, + the fdatasync (wall µs at this concurrency), then tidemail's own part.
 */
function floorsWhy(x: AcceptanceCell): string {
  const fl = x.floors;
  if (!fl) return '';
  const us = (rate: number | undefined) => (rate && rate > 0 ? f0(1e6 / rate) : '?');
  const parts = [`Node sink ${us(fl.sink)}`, `+ fdatasync ${us(fl.sinkFsync)}`, `our engine storing nothing ${us(fl.engine)}`, `+ fdatasync ${us(fl.engineFsync)}`];
  const own = fl.engineFsync && fl.engineFsync > 0 ? `; tidemail's own part ${f0(1e6 / x.tidemail - 1e6 / fl.engineFsync)} us` : '';
  const budget = 1e6 / (x.postfix * TARGETS.ratio);
  const floorOver = fl.engineFsync && 1e6 / fl.engineFsync > budget ? ' (the floor alone is over the budget)' : '';
  return `; floors of this run, us per message: ${parts.join(', ')}${floorOver}${own}`;
}

/** Why one acceptance cell is short of 1.5× Postfix, from its own figures. */
function acceptanceWhy(x: AcceptanceCell, f: TargetFigures): string {
  return acceptanceCause(x, f) + floorsWhy(x);
}

function acceptanceCause(x: AcceptanceCell, f: TargetFigures): string {
  const need = x.postfix * TARGETS.ratio;
  const wallUs = 1e6 / x.tidemail;
  const budget = 1e6 / need;
  const head = `c=${x.c}: needs ${f0(need)} msg/s (${f0(budget)} us per message), has ${f0(x.tidemail)} (${f0(wallUs)} us)`;
  const js = x.jsUs !== undefined ? ` (JS thread ${f0(x.jsUs)})` : '';
  if (x.c === 1) {
    // One session: every message pays its CPU and its own fsync one after the other.
    return `${head}; serial: daemon CPU ${f0(x.cpuUs)} us${js} + fsync ${f0(f.fsyncMs * 1000)} us per message`;
  }
  const jsBusy = x.jsUs !== undefined ? (x.jsUs * x.tidemail) / 1e6 : undefined;
  if (jsBusy !== undefined && jsBusy >= 0.85) return `${head}; the JS thread is ${f0(jsBusy * 100)}% busy: CPU per message (${f0(x.cpuUs)} us) sets the rate`;
  if ((x.machineBusy ?? 0) >= 0.85) return `${head}; the machine is ${f0((x.machineBusy ?? 0) * 100)}% busy (${f.cores} cores): short of CPU at ${f0(x.cpuUs)} us per message`;
  return `${head}; JS thread ${jsBusy !== undefined ? `${f0(jsBusy * 100)}%` : '?'} busy, so sessions wait on the one queue writer (fsync ${f0(f.fsyncMs * 1000)} us per group commit)`;
}

function acceptance(label: string, cells: AcceptanceCell[], f: TargetFigures): string[] {
  if (!cells.length) return [row(`acceptance >= ${TARGETS.ratio}x Postfix, ${label}`, 'not measured', 'n/a')];
  const missed = cells.filter((x) => !(x.postfix > 0 && x.tidemail >= x.postfix * TARGETS.ratio));
  const verdict = missed.length ? `MISSED${missed.length < cells.length ? ` at c=${missed.map((x) => x.c).join(',')}` : ''}` : 'met';
  const out = [row(`acceptance >= ${TARGETS.ratio}x Postfix, ${label}`, ratios(cells), verdict)];
  for (const x of missed) out.push(`    why: ${acceptanceWhy(x, f)}`);
  if (missed.length) out.push(`    next: ${NEXT.acceptance}`);
  return out;
}

function cpu(f: TargetFigures): string[] {
  const all = [...f.reused, ...f.oneConnection];
  if (!all.length) return [row(`daemon CPU per message <= ${ms(TARGETS.cpuUs)} ms`, 'not measured', 'n/a')];
  const list = (cells: AcceptanceCell[]) => cells.map((x) => ms(x.cpuUs)).join('/');
  const figure = [f.reused.length ? `-d ${list(f.reused)}` : '', f.oneConnection.length ? `one conn/msg ${list(f.oneConnection)}` : '']
    .filter(Boolean).join(', ') + ' ms';
  const met = all.every((x) => x.cpuUs <= TARGETS.cpuUs);
  const out = [row(`daemon CPU per message <= ${ms(TARGETS.cpuUs)} ms`, figure, met ? 'met' : 'MISSED')];
  if (met) return out;
  const why: string[] = [];
  const floor = f.reused.map((x) => f.floorCpuUs[x.c]).filter((u): u is number => u !== undefined);
  if (floor.length) why.push(`the floor (a Node SMTP sink storing nothing) costs ${floor.map(f0).join('/')} us with -d`);
  const engine = (cells: AcceptanceCell[], per: Record<number, number> | undefined) =>
    cells.map((x) => per?.[x.c]).filter((u): u is number => u !== undefined).map(f0).join('/');
  const er = engine(f.reused, f.engineCpuUs?.reused);
  const e1 = engine(f.oneConnection, f.engineCpuUs?.oneConnection);
  if (er || e1) why.push(`our engine storing nothing costs ${[er ? `${er} us with -d` : '', e1 ? `${e1} us one conn/msg` : ''].filter(Boolean).join(', ')}`);
  const daemon1 = f.oneConnection.find((x) => x.c === 1);
  if (f.stages?.length) {
    const s = f.stages;
    const steps = s.map((x, i) => (i === 0 ? `${x.stage} ${f0(x.cpuUs)}` : `${x.stage} ${x.cpuUs >= s[i - 1]!.cpuUs ? '+' : ''}${f0(x.cpuUs - s[i - 1]!.cpuUs)}`));
    const rest = daemon1 ? `; the daemon ${f0(daemon1.cpuUs)}, ${f0(daemon1.cpuUs - s.at(-1)!.cpuUs)} more than "${s.at(-1)!.stage}"` : '';
    why.push(`per stage at c=1, one conn/msg: ${steps.join(', ')} us${rest}`);
  }
  out.push(`    why: ${why.length ? why.join('; ') : 'no floor or stage figures in this run'}`);
  out.push(`    next: ${NEXT.cpu}`);
  return out;
}

function idle(f: TargetFigures): string[] {
  if (!f.idle) return [];
  const { rssMiB, nodeMiB, imports } = f.idle;
  const met = rssMiB <= TARGETS.idleMiB;
  const out = [row(`idle RSS <= ${TARGETS.idleMiB} MB`, `${f1(rssMiB)} MB`, met ? 'met' : 'MISSED')];
  if (met) return out;
  if (f.idle.split) {
    out.push(...idleSplitWhy(f.idle.split));
    out.push(`    next: ${NEXT.idleBinary}`);
    return out;
  }
  if (nodeMiB !== undefined) {
    const used = imports.filter((m) => IDLE_IMPORTS.includes(m.name));
    const sum = nodeMiB + used.reduce((n, m) => n + m.addMiB, 0);
    out.push(`    why: plain node ${f1(nodeMiB)} MB` + used.map((m) => ` + ${m.name} ${f1(m.addMiB)}`).join('') +
      ` (each imported alone) = ${f1(sum)} MB; the rest, ${f1(rssMiB - sum)} MB, is our code and its data; node alone leaves ${f1(TARGETS.idleMiB - nodeMiB)} MB of the ${TARGETS.idleMiB}`);
  }
  out.push(`    next: ${NEXT.idle}`);
  return out;
}

/** Node's own binary pages against ours, from this run's smaps of the daemon and of plain node. */
function idleSplitWhy(s: IdleSplit): string[] {
  const rest = s.rssMiB - s.binaryMiB;
  const nodeRest = s.node.rssMiB - s.node.binaryMiB;
  const out = [
    `    why: of ${f1(s.rssMiB)} MB, ${f1(s.binaryMiB)} MB are node's own binary pages (plain node ${f1(s.node.binaryMiB)}) and ${f1(rest)} MB the rest (plain node ${f1(nodeRest)}); ` +
    `ours: ${f1(s.binaryMiB - s.node.binaryMiB)} MB more binary pages (node code that our code runs) + ${f1(rest - nodeRest)} MB, private (USS) ${f1(s.ussMiB)} MB vs ${f1(s.node.ussMiB)}; ` +
    `node's binary alone leaves ${f1(TARGETS.idleMiB - s.binaryMiB)} MB of the ${TARGETS.idleMiB}`,
  ];
  if (s.helper) out.push(`    also: the privsep helper, a second node process (not in this RSS): RSS ${f1(s.helper.rssMiB)} MB, USS ${f1(s.helper.ussMiB)} MB; PSS of the daemon's processes ${f1(s.treePssMiB)} MB`);
  return out;
}

function peak(f: TargetFigures): string[] {
  if (!f.peak) return [];
  const { hwmMiB, idleMiB, concurrency } = f.peak;
  const met = hwmMiB <= TARGETS.peakMiB;
  const out = [row(`peak RSS at c=${concurrency} <= ${TARGETS.peakMiB} MB`, `${f1(hwmMiB)} MB`, met ? 'met' : 'MISSED')];
  if (met) return out;
  if (idleMiB !== undefined) out.push(`    why: idle ${f1(idleMiB)} MB + ${f1(hwmMiB - idleMiB)} MB under load (VmHWM over all runs, up to c=${concurrency})`);
  out.push(`    next: ${NEXT.peak}`);
  return out;
}

function huge(f: TargetFigures): string[] {
  if (f.hugeGrowthMiB === undefined) return [];
  const met = f.hugeGrowthMiB <= TARGETS.hugeGrowthMiB;
  const out = [row(`${f.hugeMiB ?? 50} MB message: growth <= ${TARGETS.hugeGrowthMiB} MB`, `${f1(f.hugeGrowthMiB)} MB`, met ? 'met' : 'MISSED')];
  if (!met) out.push(`    next: ${NEXT.huge}`);
  return out;
}

function startup(f: TargetFigures): string[] {
  if (!f.startup) return [row(`sendmail -t <= ${TARGETS.startupRatio}x node -e 0`, 'not measured', 'n/a')];
  const { sendmailMs, nodeMs, sendmailPeakMiB, nodePeakMiB } = f.startup;
  const ratio = sendmailMs / nodeMs;
  const met = ratio <= TARGETS.startupRatio;
  const out = [row(`sendmail -t <= ${TARGETS.startupRatio}x node -e 0`, `${ratio.toFixed(2)}x (${f0(sendmailMs)} vs ${f0(nodeMs)} ms)`, met ? 'met' : 'MISSED')];
  if (met) return out;
  const mem = sendmailPeakMiB !== undefined && nodePeakMiB !== undefined ? `, and ${f1(sendmailPeakMiB - nodePeakMiB)} MB more peak RSS` : '';
  out.push(`    why: ${f0(sendmailMs - nodeMs)} ms over starting node (the budget is ${f0(nodeMs * (TARGETS.startupRatio - 1))} ms)${mem}: loading and running our code and node's builtins it needs`);
  out.push(`    next: ${NEXT.startup}`);
  return out;
}

function row(label: string, figure: string, verdict: string): string {
  return `  ${label.padEnd(41)} ${figure.padEnd(50)} ${verdict}`;
}

export function targetLines(f: TargetFigures): string[] {
  return [
    'issue 17 targets (figures of this run):',
    ...acceptance('-d', f.reused, f),
    ...acceptance('one conn/msg', f.oneConnection, f),
    ...cpu(f),
    ...idle(f),
    ...peak(f),
    ...huge(f),
    ...startup(f),
  ];
}

/** Median wall times and peak RSS from startup.js's output. */
export function parseStartup(text: string): TargetFigures['startup'] | undefined {
  const line = (label: string) => new RegExp(`^\\s+${label}\\s+(\\d+) /\\s+\\d+\\s+peak RSS ([\\d.]+) MB`, 'm').exec(text);
  const node = line('node -e 0');
  const sendmail = line('sendmail -t');
  if (!node || !sendmail) return undefined;
  return { nodeMs: Number(node[1]), sendmailMs: Number(sendmail[1]), nodePeakMiB: Number(node[2]), sendmailPeakMiB: Number(sendmail[2]) };
}

/** The c=1 CPU per message of each stage from stages.js's table. */
export function parseStages(text: string): TargetFigures['stages'] {
  return [...text.matchAll(/^\s+(bare|\+ [a-z]+)\s+\d+ msg\/s\s+(\d+) us/gm)].map((m) => ({ stage: m[1]!, cpuUs: Number(m[2]) }));
}
