// Temp dirs and files for tests. Dirs are 0755 so the daemon, which drops root to `nobody`
// when tests run as root (CI), can still read its config and routes.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const made: string[] = [];

export function tmpDir(prefix = 'tidemail-test-'): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  fs.chmodSync(d, 0o755);
  made.push(d);
  return d;
}

export function writeFile(file: string, content: string | Buffer, mode = 0o644): string {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
  return file;
}

export const isRoot = () => process.getuid?.() === 0;

/** A 0600 secret readable by the daemon's run user (nobody when we are root). */
export function writeSecret(file: string, content: string): string {
  writeFile(file, content, 0o600);
  if (isRoot()) {
    const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    fs.chownSync(file, uid, gid);
  }
  return file;
}

export function cleanupTmp(): void {
  for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}
