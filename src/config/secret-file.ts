// Writing secrets (rotated OAuth2 refresh tokens, the AUTH users file): mode 0600, atomically,
// fsync'd — the same way everywhere.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { syncDirSync } from '../durable-fs.js';
import path from 'node:path';
import { resolveRunUser } from '../privileges.js';

/**
 * Replaces a secret file with mode 0600: a temp file in the same directory renamed over it (atomic),
 * or, when the directory is not ours to write (root-owned /etc/tidemail/secrets), the file
 * rewritten in place.
 */
export function writeSecretFile(file: string, content: string, owner?: { uid: number; gid: number }): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx', 0o600);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // Rewriting in place needs the file to be there: a new one on a read-only or foreign
    // directory cannot be made, and the reason is this error, not the ENOENT that would follow.
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
    if (!fs.existsSync(file)) throw Object.assign(err as Error, { path: file }); // name the file, not our temp name
    return rewriteInPlace(file, content);
  }
  try {
    fs.writeFileSync(fd, content);
    fs.fchmodSync(fd, 0o600);
    // Keep the file's owner (or give it to `owner`) so the daemon's user can still read it.
    const st = owner ?? statOrNull(file);
    if (st && process.getuid?.() === 0) fs.fchownSync(fd, st.uid, st.gid);
    fs.fsyncSync(fd);
  } catch (err) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  syncDirSync(dir);
}

function rewriteInPlace(file: string, content: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    const buf = Buffer.from(content);
    fs.writeSync(fd, buf, 0, buf.length, 0);
    fs.ftruncateSync(fd, buf.length);
    fs.fchmodSync(fd, 0o600);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file);
  } catch {
    return null;
  }
}


// Reading secrets while the daemon runs: a corrected password file takes effect at the next
// connection, no SIGHUP needed. A stat per use (inode, size, mtime) is cheap next to a login.

export interface SecretRead {
  file: string;
  /** When the daemon last read the file (ms since the epoch). */
  readAt: number;
  /** The last read failed (the previous value is kept): why. */
  error?: string;
}

interface CachedSecret extends SecretRead {
  value: string;
  key: string;
}

const secrets = new Map<string, CachedSecret>();

const statKey = (st: fs.Stats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;

/**
 * The secret in `file` now: `loaded` (what the configuration read at load time) until the file
 * changes, then its new first line. A file that cannot be read any more keeps the last value
 * (and says so in `secretReads()`): a half-written edit must not take the route down.
 */
export function currentSecret(file: string, loaded: string, parse: (text: string) => string = (t) => t.replace(/\r?\n$/, '')): { value: string; read: SecretRead } {
  let c = secrets.get(file);
  // First use: compare with the file once more (it may have changed since the config was read).
  if (!c) secrets.set(file, (c = { file, value: loaded, readAt: Date.now(), key: '' }));
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(file);
  } catch (err) {
    c.error = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
  if (st && statKey(st) !== c.key) {
    try {
      c.value = parse(fs.readFileSync(file, 'utf8'));
      c.key = statKey(st);
      c.readAt = Date.now();
      c.error = undefined;
    } catch (err) {
      c.error = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    }
  }
  return { value: c.value, read: { file, readAt: c.readAt, ...(c.error ? { error: c.error } : {}) } };
}

/** The first line of a file (POP3 password files). */
export const firstLine = (text: string): string => text.split(/\r?\n/, 1)[0] ?? '';

/** The last read of `file` by currentSecret (no new stat): what a failed login used. */
export function lastRead(file: string): SecretRead {
  const c = secrets.get(file);
  return c ? { file, readAt: c.readAt, ...(c.error ? { error: c.error } : {}) } : { file, readAt: Date.now() };
}

/** Every secret file used since the start: which, when it was read, and a read that failed. */
export function secretReads(): SecretRead[] {
  return [...secrets.values()].map(({ file, readAt, error }) => ({ file, readAt, ...(error ? { error } : {}) }));
}

/** "read 12:03:04Z" for messages: which copy of the secret a failed login used. */
export function describeRead(r: SecretRead): string {
  return `${r.file}, read ${new Date(r.readAt).toISOString()}${r.error ? `; rereading it failed: ${r.error}` : ''}`;
}


/**
 * What is wrong with a secret file that should exist, as a problem and a fix — or null when it
 * is there, private and readable. "Cannot read" is never reported as "missing", and no fix
 * truncates an existing file (an `install /dev/null FILE` run as root would wipe the password).
 */
export function secretFileProblem(file: string): { problem: string; fix: string } | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      // `set -o noclobber` semantics: creates the file only if it is not there.
      return { problem: `file ${file} does not exist`, fix: `create it (mode 0600) with the secret on one line: (umask 077; set -C; cat > ${file})` };
    }
    return { problem: `cannot read ${file}: ${code === 'EACCES' ? 'permission denied on a directory above it' : code}${whoCan(path.dirname(file))}`, fix: `run this as root or as the user the file belongs to` };
  }
  if (st.mode & 0o077) return { problem: `file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)})`, fix: `chmod 600 ${file}` };
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { problem: `cannot read ${file}: ${code === 'EACCES' ? 'permission denied' : code}${whoCan(file, st)}`, fix: `run this as ${st.uid === 0 ? 'root' : `root or as ${ownerName(st.uid)}`} (the file is fine where the daemon reads it as its owner)` };
  }
  return null;
}

function whoCan(file: string, st?: fs.Stats): string {
  try {
    const s = st ?? fs.statSync(file);
    return ` (it belongs to ${ownerName(s.uid)}, mode ${(s.mode & 0o777).toString(8).padStart(4, '0')})`;
  } catch {
    return '';
  }
}

function ownerName(uid: number): string {
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[2] === String(uid) && f[0]) return f[0];
    }
  } catch {
    /* no passwd file: the number will do */
  }
  return `uid ${uid}`;
}

/**
 * Who should own a secret a root command writes for the daemon (a DKIM or TLS key): the run
 * user (`user` in the config), so it can read it again on SIGHUP after dropping root — as
 * `setup` does. null when not root (the file is the caller's) or the run user would be root.
 */
export function secretOwner(runUser: string): { uid: number; gid: number; name: string } | null {
  try {
    const u = resolveRunUser(runUser);
    return u ? { uid: u.uid, gid: u.gid, name: u.name } : null;
  } catch {
    return null;
  }
}

/** Gives `file`, and the directories from `createdDir` (made by us) down to it, to `owner`. */
export function chownSecret(file: string, owner: { uid: number; gid: number }, createdDir?: string): void {
  if (createdDir) {
    for (let d = path.dirname(file); d.length >= createdDir.length && d.startsWith(createdDir); d = path.dirname(d)) fs.chownSync(d, owner.uid, owner.gid);
  }
  fs.chownSync(file, owner.uid, owner.gid);
}
