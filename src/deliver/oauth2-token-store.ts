// Where a rotated OAuth2 refresh token goes, and which copy is read.
//
// The refresh_token_file is the admin's: often root:tidemail 0750 in /etc/tidemail/secrets,
// where the daemon may read but not create files. Rewriting it in place there is not atomic (a
// kill between truncate and write leaves it empty, and the account needs a new authorization),
// so it is never opened for writing. A rotated token goes:
//   1. over the original, atomically (temp file in the same directory, fsync, rename, directory
//      fsync) when that directory lets us create files;
//   2. otherwise to STATE_DIR/oauth2/<hash of the file's path>.token (0600 in a 0700 directory,
//      written the same atomic way), with a fingerprint (sha256) of the original's content.
// Reading: the state copy wins while the original still has the content it had when we rotated
// away from it; once the admin puts anything else there (a fresh authorization), the original
// wins and the state copy is deleted. Content, not mtime, decides: a Raspberry Pi without a
// clock battery boots in 1970 until NTP answers, and `cp -p` keeps old mtimes.
// The token itself is written nowhere else and never logged.

import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { syncDirSync } from '../durable-fs.js';
import path from 'node:path';

let stateDir: string | null = null;

/** The daemon's state directory; without one (a CLI run) rotated tokens live in memory only. */
export function setTokenStateDir(dir: string | null): void {
  stateDir = dir;
}

interface StateCopy {
  /** The refresh_token_file this replaces. */
  for: string;
  /** sha256 of that file's content (trimmed) when the token was rotated away from it. */
  original: string;
  token: string;
  at: number;
}

export interface StoredToken {
  token: string;
  /** Where it came from: the admin's file or our state copy. */
  from: 'file' | 'state';
}

const fingerprint = (text: string) => createHash('sha256').update(text.trim(), 'utf8').digest('hex');

/** The state copy's path for a refresh_token_file, or null without a state directory. */
export function stateCopyPath(file: string): string | null {
  if (!stateDir) return null;
  const key = createHash('sha256').update(path.resolve(file), 'utf8').digest('hex').slice(0, 24);
  return path.join(stateDir, 'oauth2', `${key}.token`);
}

/**
 * The refresh token to use: the state copy while the original is unchanged since rotation,
 * else the original's content (trimmed).
 * @throws the original file's read error (ENOENT, EACCES) for the caller to explain.
 */
export function readRefreshToken(file: string): StoredToken {
  const text = fs.readFileSync(file, 'utf8');
  const copyPath = stateCopyPath(file);
  const copy = copyPath ? readCopy(copyPath) : null;
  if (copy && copy.for === path.resolve(file) && copy.original === fingerprint(text) && copy.token) return { token: copy.token, from: 'state' };
  // The admin replaced the original (or the copy is unreadable): theirs is newer; ours goes.
  if (copy && copyPath) fs.rmSync(copyPath, { force: true });
  return { token: text.trim(), from: 'file' };
}

/**
 * Saves a rotated refresh token (see the top of this file).
 * @returns where it went: the path written.
 * @throws when neither the original's directory nor a state directory can take it.
 */
export function saveRefreshToken(file: string, token: string): string {
  const copyPath = stateCopyPath(file);
  try {
    const st = fs.statSync(file);
    atomicWrite(file, token + '\n', process.getuid?.() === 0 ? { uid: st.uid, gid: st.gid } : undefined);
    if (copyPath) fs.rmSync(copyPath, { force: true });
    return file;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
  }
  if (!copyPath) throw new Error(`the directory of ${file} is not writable and there is no state directory to keep the new token in`);
  // The fingerprint is of what the original holds now, i.e. what this token replaces.
  const copy: StateCopy = { for: path.resolve(file), original: fingerprint(fs.readFileSync(file, 'utf8')), token, at: Date.now() };
  fs.mkdirSync(path.dirname(copyPath), { recursive: true, mode: 0o700 });
  atomicWrite(copyPath, JSON.stringify(copy) + '\n');
  return copyPath;
}

function readCopy(p: string): StateCopy | null {
  try {
    const j = JSON.parse(fs.readFileSync(p, 'utf8')) as Partial<StateCopy>;
    return typeof j.token === 'string' && typeof j.original === 'string' && typeof j.for === 'string' ? (j as StateCopy) : null;
  } catch {
    return null; // none, or torn by hand: the original is used
  }
}

/** temp (0600, same directory) → write → fsync → rename over `file` → fsync the directory. */
function atomicWrite(file: string, content: string, owner?: { uid: number; gid: number }): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    try {
      fs.writeFileSync(fd, content);
      fs.fchmodSync(fd, 0o600);
      if (owner) fs.fchownSync(fd, owner.uid, owner.gid);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  syncDirSync(dir);
}
