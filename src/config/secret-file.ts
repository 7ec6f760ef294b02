// Writing secrets (rotated OAuth2 refresh tokens, the AUTH users file): mode 0600, atomically,
// fsync'd — the same way everywhere.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { syncDirSync } from '../durable-fs.js';
import path from 'node:path';

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
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'EROFS') throw err;
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

