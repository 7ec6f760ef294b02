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

/**
 * useradd/userdel, retried while another test file holds the passwd lock (the runner runs two
 * files at once; shadow-utils then exits 10, "cannot lock /etc/passwd").
 */
function shadowTool(cmd: string, args: string[]): void {
  for (let attempt = 0; ; attempt++) {
    try {
      execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      return;
    } catch (err) {
      const e = err as { status?: number; stderr?: Buffer };
      if (attempt >= 100 || !(e.status === 10 || /lock/i.test(String(e.stderr ?? '')))) throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50 + Math.random() * 100);
    }
  }
}

/** `n` users with fresh homes (0700, their own); `system` ones get a uid below 1000. */
export function makeUsers(n: number, opts: { system?: boolean; prefix?: string } = {}): TestUser[] {
  const base = tmpDir('tidemail-homes-');
  const out: TestUser[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${opts.prefix ?? 'tm'}${crypto.randomBytes(3).toString('hex')}${i}`;
    const home = path.join(base, name);
    shadowTool('useradd', [...(opts.system ? ['--system'] : []), '-m', '-d', home, '-s', '/bin/sh', '-U', name]);
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
  shadowTool('userdel', [name]);
}

export function removeUsers(): void {
  for (const name of made.splice(0)) {
    try {
      shadowTool('userdel', [name]);
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
