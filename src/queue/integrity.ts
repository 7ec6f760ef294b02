// Is queue.sqlite fit to run on? Checked before and right after opening it, so that a damaged
// queue stops the daemon (and mailq) with the path and the fix instead of starting "ready" and
// failing every pass — and so that a truncated file is never mistaken for a new, empty queue.
//
// New vs truncated: SQLite writes a non-empty file when it creates the schema, and
// `queue.created` (written once the schema is on disk) says a queue existed here. So a missing
// or 0-byte queue.sqlite is new only when there is no marker and no WAL/rollback journal.
// (A 0-byte file with a WAL must never be opened: SQLite deletes the WAL of an empty database.)

import fs from 'node:fs';
import path from 'node:path';
import type { Db } from './db.js';
import { STATE_EXIT, StateError } from './state-error.js';

export const QUEUE_FILE = 'queue.sqlite';
export const MARKER_FILE = 'queue.created';
const MAGIC = 'SQLite format 3\0';

const size = (f: string) => {
  try {
    return fs.statSync(f).size;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return -1;
    throw err;
  }
};

export function salvageAdvice(file: string): string {
  return `keep the file; stop the daemon and run \`tidemail queue salvage\`: it copies every readable message into a new queue and keeps this file as ${path.basename(file)}.broken-DATE (or restore ${file} from a backup)`;
}

/** Throws a StateError (74) for a file that must not be opened; 'new' when there is no queue yet. */
export function preflightQueue(stateDir: string): 'new' | 'existing' {
  const file = path.join(stateDir, QUEUE_FILE);
  const marker = path.join(stateDir, MARKER_FILE);
  const n = size(file);
  if (n <= 0) {
    const held = fs.existsSync(marker) ? `${MARKER_FILE} says a queue was created here` : size(`${file}-wal`) > 0 ? 'a write-ahead log (-wal) is next to it' : size(`${file}-journal`) > 0 ? 'a rollback journal is next to it' : null;
    if (!held) return 'new';
    const what = n < 0 ? 'is missing' : 'is empty (0 bytes: truncated)';
    const summary = `the queue database ${file} ${what}, but ${held}: the mail it held is not there`;
    const fix = `restore ${file} from a backup; if you removed it on purpose, also remove ${n < 0 ? marker : `${file}, ${marker} and any ${file}-wal`} to start with an empty queue`;
    throw new StateError(`${summary}. tidemail will not start on an empty queue in its place: ${fix}`, STATE_EXIT.IOERR, { summary, fix });
  }
  const head = Buffer.alloc(16);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, head, 0, 16, 0);
  } finally {
    fs.closeSync(fd);
  }
  if (head.toString('latin1') !== MAGIC) {
    const summary = `the queue database ${file} is not an SQLite database (its first bytes are not "SQLite format 3")`;
    // Nothing readable starts there, so salvage cannot help either: a backup can.
    const fix = `keep the file (move it aside: mv ${file} ${file}.broken) and restore ${file} from a backup; \`tidemail queue salvage\` cannot read a file that does not start like an SQLite database`;
    throw new StateError(`${summary}; tidemail will not start on it. ${fix}`, STATE_EXIT.IOERR, { summary, fix });
  }
  return 'existing';
}

/** True for SQLite's "this file is damaged" errors. */
export function isCorruption(err: unknown): boolean {
  // Already worded (quickCheck's own "damaged"): wrapping it again would say it twice.
  if (err instanceof StateError) return false;
  return /SQLITE_CORRUPT|SQLITE_NOTADB|malformed|file is not a database/.test((err as Error)?.message ?? '');
}

export function damaged(file: string, detail: string, cause?: unknown): StateError {
  const summary = `the queue database ${file} is damaged (${detail})`;
  return new StateError(`${summary}; tidemail will not start on it, so the mail in it is not lost. ${salvageAdvice(file)}`, STATE_EXIT.IOERR, { cause, summary, fix: salvageAdvice(file) });
}

/** PRAGMA quick_check: the b-tree pages are well-formed (O(size); no index-vs-table cross check). */
export async function quickCheck(db: Db, file: string): Promise<void> {
  let rows: { quick_check: string }[];
  try {
    rows = await db.all<{ quick_check: string }>('PRAGMA quick_check(5)');
  } catch (err) {
    if (isCorruption(err)) throw damaged(file, (err as Error).message, err);
    throw err;
  }
  const problems = rows.map((r) => r.quick_check).filter((s) => s !== 'ok');
  if (problems.length) throw damaged(file, `quick_check: ${problems.join('; ')}`);
}

/** Writes the marker once the schema is on disk (fsync'd, directory too). */
export function writeMarker(stateDir: string): void {
  const marker = path.join(stateDir, MARKER_FILE);
  if (fs.existsSync(marker)) return;
  const tmp = `${marker}.tmp`;
  const fd = fs.openSync(tmp, 'w', 0o600);
  try {
    fs.writeSync(fd, `tidemail queue created ${new Date().toISOString()}; while this file exists, a missing or empty ${QUEUE_FILE} is an error, never a new queue\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, marker);
  const dfd = fs.openSync(stateDir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}
