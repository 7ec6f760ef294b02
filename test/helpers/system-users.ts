// Real system users for a test (root only): useradd with unique names and homes under a temp
// dir, removed again by removeUsers() (and at exit, whatever way the file ends).

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './tmp.js';

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

const made: string[] = [];
process.on('exit', () => removeUsers());

/** `n` users with fresh homes (0700, their own); `system` ones get a uid below 1000. */
export function makeUsers(n: number, opts: { system?: boolean; prefix?: string } = {}): TestUser[] {
  const base = tmpDir('tidemail-homes-');
  const out: TestUser[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${opts.prefix ?? 'tm'}${crypto.randomBytes(3).toString('hex')}${i}`;
    const home = path.join(base, name);
    execFileSync('useradd', [...(opts.system ? ['--system'] : []), '-m', '-d', home, '-s', '/bin/sh', '-U', name], { stdio: ['ignore', 'ignore', 'pipe'] });
    made.push(name);
    fs.chmodSync(home, 0o700);
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
    out.push({ name, uid, gid, home });
  }
  return out;
}

/** Removes one user now (the "user removed while mail waits" case); its home stays. */
export function removeUser(name: string): void {
  const i = made.indexOf(name);
  if (i !== -1) made.splice(i, 1);
  execFileSync('userdel', [name], { stdio: 'ignore' });
}

export function removeUsers(): void {
  for (const name of made.splice(0)) {
    try {
      execFileSync('userdel', [name], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
}

/** Writes `file` as `u` would have: owned by them, `mode`. */
export function writeAs(u: TestUser, file: string, content: string, mode = 0o644): string {
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
  fs.chownSync(file, u.uid, u.gid);
  return file;
}

/** The regular files in `dir` (none when it does not exist). */
export function filesIn(dir: string): string[] {
  try {
    return fs.readdirSync(dir).map((f) => path.join(dir, f)).filter((f) => fs.lstatSync(f).isFile());
  } catch {
    return [];
  }
}
