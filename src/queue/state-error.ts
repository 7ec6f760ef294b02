// Problems with the state directory and its databases, as one clear sentence and a sysexits
// code, so the daemon and the CLI never answer a read-only disk or a damaged queue with a stack
// trace. Codes (sysexits.h):
//   73 EX_CANTCREAT  the state dir or a file in it cannot be created/written (read-only fs)
//   77 EX_NOPERM     permission denied on the state dir
//   75 EX_TEMPFAIL   disk full, database locked: retrying later can work
//   74 EX_IOERR      the queue file is damaged, truncated or not a database: it will not heal
//                    by itself; an admin must salvage it
//   78 EX_CONFIG     the file was written by a newer tidemail (a downgrade): install that one

import fs from 'node:fs';
import path from 'node:path';
import { TidemailError, isDiskFull } from '../errors.js';

export const STATE_EXIT = { CANTCREAT: 73, IOERR: 74, TEMPFAIL: 75, NOPERM: 77, CONFIG: 78 } as const;

export class StateError extends TidemailError {
  override name = 'StateError';
  /** The problem and the fix apart, for `tidemail check` (the message has both). */
  readonly summary: string;
  readonly fix: string;
  constructor(message: string, readonly exitCode: number, options?: ErrorOptions & { summary?: string; fix?: string }) {
    super(message, options);
    this.summary = options?.summary ?? message;
    this.fix = options?.fix ?? '';
  }
}

const ERRNO_MEANING: Record<string, string> = {
  EROFS: 'the filesystem is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EIO: 'input/output error (a failing disk or card)',
  ENOTDIR: 'a part of the path is not a directory',
  ENOENT: 'a part of the path does not exist',
};

/** The same failure as a StateError naming `where` and the fix; other errors pass through. */
export function stateError(err: unknown, where: string, user?: string): unknown {
  if (err instanceof StateError) return err;
  let e = err as NodeJS.ErrnoException | undefined;
  if (!e || typeof e !== 'object') return err;
  // A recursive mkdir under a read-only or foreign directory reports ENOENT: ask the deepest
  // existing ancestor why it cannot be written.
  if (e.code === 'ENOENT' && e.syscall === 'mkdir' && e.path) e = whyNotWritable(e.path) ?? e;
  const file = e.path ?? where;
  const msg = e.message ?? '';
  const owner = user ? `chown -R ${user} ${where}` : `fix the owner or mode of ${where}`;
  if (isDiskFull(e)) {
    return new StateError(`${file}: ${ERRNO_MEANING.ENOSPC} (${e.code ?? msg}); free space on that filesystem (df -h ${where}) and start again`, STATE_EXIT.TEMPFAIL, { cause: err });
  }
  if (e.code === 'EROFS' || /SQLITE_READONLY|readonly database/.test(msg)) {
    return new StateError(`${file}: ${ERRNO_MEANING.EROFS} or the file is not writable (${e.code ?? msg}); tidemail keeps its queue there, so remount it read-write (mount -o remount,rw) or set state_dir to a writable directory`, STATE_EXIT.CANTCREAT, { cause: err });
  }
  if (e.code === 'EACCES' || e.code === 'EPERM') {
    return new StateError(`${file}: ${ERRNO_MEANING[e.code]}; ${owner}, or run as a user who may write there`, STATE_EXIT.NOPERM, { cause: err });
  }
  if (/SQLITE_CANTOPEN/.test(msg) || e.code === 'SQLITE_CANTOPEN') {
    return new StateError(`${file}: cannot be opened or created (${msg}); check that ${where} exists, is writable by the daemon's user (${owner}) and is not on a read-only filesystem`, STATE_EXIT.CANTCREAT, { cause: err });
  }
  if (/SQLITE_BUSY|database is locked/.test(msg)) {
    return new StateError(`${file}: locked by another process (${msg}); try again in a moment`, STATE_EXIT.TEMPFAIL, { cause: err });
  }
  // mkdir -p over a file of the same name (state_dir set to a file, or a file in its way).
  if (e.code === 'EEXIST' && e.syscall === 'mkdir') {
    return new StateError(`${file}: exists and is not a directory; set state_dir to a directory, or rename that file if it is in the way`, STATE_EXIT.CANTCREAT, { cause: err });
  }
  if (e.code && ERRNO_MEANING[e.code]) {
    return new StateError(`${file}: ${ERRNO_MEANING[e.code]} (${e.code})`, e.code === 'ENOENT' || e.code === 'ENOTDIR' ? STATE_EXIT.CANTCREAT : STATE_EXIT.IOERR, { cause: err });
  }
  return err;
}

/**
 * Why a recursive mkdir of `dir` failed with ENOENT: the deepest existing ancestor's own error
 * (EACCES, EROFS…) as a mkdir error on that path; null when it is writable after all.
 */
export function whyNotWritable(dir: string): NodeJS.ErrnoException | null {
  let p = dir;
  while (!fs.existsSync(p) && path.dirname(p) !== p) p = path.dirname(p);
  try {
    fs.accessSync(p, fs.constants.W_OK);
    return null;
  } catch (err) {
    return Object.assign(err as NodeJS.ErrnoException, { path: p, syscall: 'mkdir' });
  }
}
