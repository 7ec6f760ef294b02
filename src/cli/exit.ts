// sysexits.h, and the mapping from our errors to them.

import { ConfigError, TempFailError, UsageError, isDiskFull } from '../errors.js';
import { DaemonError } from '../control/client.js';
import { StateError } from '../queue/state-error.js';
import { LibraryMismatchError } from '../deps/pinned.js';
import { ListenError } from '../doctor/ports.js';
import { printable, printableLines } from '../log/printable.js';
import { describeFileError } from './file-error.js';

export const EX = {
  OK: 0,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  NOUSER: 67,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  OSERR: 71,
  CANTCREAT: 73,
  IOERR: 74,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const;

/** Prints a one-line error for the user and returns the exit code. */
export function reportError(prog: string, err: unknown): number {
  const e = err as NodeJS.ErrnoException;
  // A write to a pipe or socket whose other end went away. Our own stdout and stderr never get
  // here (quietWhenReaderGoes); this is one a command opened, and it did not finish.
  if (e?.code === 'EPIPE' && e.syscall === 'write') return EX.IOERR;
  // The state dir or a database in it (read-only, full, damaged, newer): the message says the fix.
  if (err instanceof StateError) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    return err.exitCode;
  }
  if (err instanceof LibraryMismatchError) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    return EX.SOFTWARE;
  }
  // A listener the daemon could not bind: the words of `tidemail check`, 75/77/71.
  if (err instanceof ListenError) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    return err.exitCode;
  }
  // A unix socket (the control socket) that cannot be created: name it and say the fix.
  if (e?.syscall === 'listen' && typeof (e as { address?: unknown }).address === 'string') {
    const where = (e as unknown as { address: string }).address;
    const dir = where.slice(0, where.lastIndexOf('/')) || '/';
    // Linux cuts a socket path at 107 bytes, so a long one fails with a misleading code.
    const tooLong = Buffer.byteLength(where) > 107;
    const fix =
      tooLong ? `the path is ${Buffer.byteLength(where)} bytes, more than a unix socket takes (107); use a shorter state_dir`
      : e.code === 'EADDRINUSE' ? `another daemon may be using this state dir; stop it, or remove ${where} if none runs`
      : e.code === 'EACCES' || e.code === 'EPERM' ? `let the daemon's user (\`user\` in tidemail.toml) write ${dir}: chown it to that user`
      : e.code === 'ENOENT' ? `create ${dir} (state_dir)`
      : `check state_dir`;
    process.stderr.write(`${prog}: cannot create the control socket ${where}: ${e.code ?? e.message}\n  fix: ${fix}\n`);
    if (tooLong) return EX.CONFIG;
    return e.code === 'EACCES' || e.code === 'EPERM' ? EX.NOPERM : e.code === 'EADDRINUSE' ? EX.TEMPFAIL : EX.OSERR;
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`${prog}: configuration error: ${e.message}\n`);
    return EX.CONFIG;
  }
  if (err instanceof UsageError) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    return EX.USAGE;
  }
  if (isDiskFull(err)) {
    process.stderr.write(`${prog}: cannot queue message: disk full (${e.message}); try again later\n`);
    return EX.TEMPFAIL;
  }
  if (err instanceof TempFailError || err instanceof DaemonError) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    return EX.TEMPFAIL;
  }
  // A file or directory a command was pointed at (--out DIR, the users file): what, where, the fix.
  const file = describeFileError(err);
  if (file) {
    process.stderr.write(`${prog}: ${printableLines(file.text)}\n`);
    return file.code;
  }
  if (e?.code === 'EACCES' || e?.code === 'EPERM') {
    process.stderr.write(`${prog}: permission denied: ${e.message}\n`);
    return EX.NOPERM;
  }
  return reportBug(prog, err);
}

/**
 * The reader of our output went away (`mailq | head -1`, a pager quit, `grep -q`): what it did
 * not want is not written, nothing is said, and the exit code stays the command's own, as
 * postqueue -p does (SIGPIPE ignored, EPIPE ends the listing, exit 0). Node ignores SIGPIPE, so
 * the EPIPE comes as an 'error' event on the stream, after the write, at a moment that depends on
 * how much the pipe took: without a listener it was uncaught and the code was 74 or 0 by chance
 * (docs/DESIGN-NOTES.md "A reader that goes away"). Any other write error is reported as before.
 */
export function quietWhenReaderGoes(prog: string): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') process.exit(reportError(prog, err));
    });
  }
}

/**
 * An error nothing above knows: a bug in tidemail (EX_SOFTWARE). One line for the user; the
 * stack trace only when TIDEMAIL_DEBUG is set (a user cannot act on it; a bug report can).
 */
export function reportBug(prog: string, err: unknown): number {
  const e = err as Error | undefined;
  const what = (e instanceof Error ? e.message : String(err)).replace(/\s*[\r\n]+\s*/g, ' ');
  if (process.env.TIDEMAIL_DEBUG) {
    process.stderr.write(`${prog}: internal error: ${e?.stack ?? what}\n`);
  } else {
    process.stderr.write(`${prog}: internal error: ${printable(what)}\n  this is a bug in tidemail: run again with TIDEMAIL_DEBUG=1 for the details, and report them\n`);
  }
  return EX.SOFTWARE;
}
