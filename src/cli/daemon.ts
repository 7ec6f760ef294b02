// `tidemail daemon`: runs in the foreground (systemd, procd and runit supervise it).

import v8 from 'node:v8';
import { Daemon } from '../daemon.js';
import { UsageError } from '../errors.js';
import { stateError } from '../queue/state-error.js';
import { forceLogLevel, log, LOG_LEVELS, type LogLevel } from '../log/log.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';

export async function runDaemon(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  const level = takeLogLevel(args);
  if (args.length) throw new UsageError(`unknown argument ${args[0]}\nusage: tidemail daemon [--config FILE] [--log-level debug|info|warn|error]`);
  if (level) forceLogLevel(level); // wins over [log] level, also after a reload
  // V8 otherwise lets the old generation grow for a long time before it collects: a daemon
  // taking 5 msg/s climbed from 64 to 94 MB RSS in 11 minutes with a flat live heap (issue 17).
  // Heap sizing reads this flag at every GC, so setting it here works for every launcher
  // (shebang, systemd, procd) without a command-line option.
  v8.setFlagsFromString('--optimize-for-size');
  // Signals are taken from the start: a supervisor may send SIGTERM the moment "daemon ready"
  // is printed, before start() has returned; that must stop us cleanly, not kill us.
  let daemon: Daemon | null = null;
  let stopRequested: string | null = null;
  let stopNow: ((sig: string) => void) | null = null;
  const onStop = (sig: string) => {
    if (stopNow) return stopNow(sig);
    // A second signal while start-up still runs (stuck on a slow disk?): leave now. Nothing is
    // accepted before start() returns, and every queue write is a transaction.
    if (stopRequested) process.exit(EX.TEMPFAIL);
    stopRequested = sig;
  };
  process.on('SIGTERM', () => onStop('SIGTERM'));
  process.on('SIGINT', () => onStop('SIGINT'));
  process.on('SIGHUP', () => daemon?.reloadOnSignal());
  // A bug that escapes while the daemon runs: main.ts prints one line and exits 70; the stack
  // goes into the log first (one line: journald keeps it for the bug report).
  process.prependListener('uncaughtException', (err) => {
    log.error(null, 'internal error', { error: err?.message ?? String(err), stack: err?.stack?.split('\n').slice(1).map((l) => l.trim()).join(' | ') });
  });
  try {
    daemon = await Daemon.start({ configPath });
  } catch (err) {
    // A file-system failure in the state dir at start (read-only, full, not ours): one clear
    // sentence and a sysexits code instead of a stack trace (queue/state-error.ts).
    const p = (err as NodeJS.ErrnoException).path;
    throw p ? stateError(err, p) : err;
  }
  const running = daemon;
  return new Promise<number>((resolve) => {
    let stopping = false;
    stopNow = (sig: string) => {
      if (stopping) return;
      stopping = true;
      log.info(null, `received ${sig}, stopping`);
      running.stop().then(() => resolve(EX.OK), () => resolve(EX.SOFTWARE));
    };
    if (stopRequested) stopNow(stopRequested);
  });
}

/** `--log-level LEVEL` / `--log-level=LEVEL`, removed from args. */
function takeLogLevel(args: string[]): LogLevel | undefined {
  const i = args.findIndex((a) => a === '--log-level' || a.startsWith('--log-level='));
  if (i < 0) return undefined;
  const a = args[i]!;
  const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : args[i + 1];
  args.splice(i, a.includes('=') ? 1 : 2);
  if (!(LOG_LEVELS as readonly string[]).includes(v ?? '')) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')} (got ${v ?? 'nothing'})`);
  return v as LogLevel;
}
