// Where test daemons and CLIs run from. Tests run as root start the daemon, which drops to
// `nobody` (makeSite) — and refuses to start when nobody cannot read its code (a clone in /root or
// in a 0700 `mktemp -d`: src/startup-reachability.ts). So then we run the very same files from a
// hard-linked copy under the temp dir, which nobody can reach; otherwise from the repo itself.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lookupUser } from '../../src/local/users.js';
import { codePaths, firstUnreadable } from '../../src/startup-reachability.js';

/** What the installed package has: enough to run bin/tidemail.js. */
const ENTRIES = ['package.json', 'bin', 'dist/src', 'node_modules', 'presets', 'routes', 'packaging'];

export function codeRoot(repo: string): string {
  if (process.getuid?.() !== 0) return repo; // no privilege drop, nothing to reach
  const nobody = lookupUser('nobody');
  if (!nobody || !firstUnreadable(nobody, [...codePaths(repo), path.join(repo, 'bin', 'tidemail.js')])) return repo;
  return mirror(repo);
}

/** Newest mtime under the entries: a rebuild (tsc, npm ci) gets a fresh copy. */
function newest(p: string): number {
  const st = fs.lstatSync(p);
  if (!st.isDirectory() || path.basename(p) === 'node_modules') return st.mtimeMs;
  let m = st.mtimeMs;
  for (const e of fs.readdirSync(p)) m = Math.max(m, newest(path.join(p, e)));
  return m;
}

const hash = (s: string) => crypto.createHash('sha256').update(s).digest('hex').slice(0, 10);

function mirror(repo: string): string {
  const present = ENTRIES.filter((e) => fs.existsSync(path.join(repo, e)));
  const sig = present.map((e) => newest(path.join(repo, e))).join(',') + fs.statSync(path.join(repo, 'package-lock.json'), { throwIfNoEntry: false })?.mtimeMs;
  const prefix = `tidemail-code-${hash(repo)}-`;
  const dir = path.join(os.tmpdir(), prefix + hash(sig));
  if (fs.existsSync(path.join(dir, '.complete'))) return dir;
  // Test files run in parallel: each builds its own copy and the first rename wins.
  const part = fs.mkdtempSync(`${dir}.part-`);
  for (const e of present) {
    const to = path.join(part, path.dirname(e));
    fs.mkdirSync(to, { recursive: true, mode: 0o755 });
    try {
      execFileSync('cp', ['-al', path.join(repo, e), to], { stdio: 'ignore' }); // same filesystem: links, instant
    } catch {
      execFileSync('cp', ['-a', path.join(repo, e), to]);
    }
  }
  fs.writeFileSync(path.join(part, '.complete'), `${repo}\n`);
  fs.chmodSync(part, 0o755);
  try {
    fs.renameSync(part, dir);
  } catch {
    fs.rmSync(part, { recursive: true, force: true });
  }
  if (!fs.existsSync(path.join(dir, '.complete'))) throw new Error(`could not make a readable copy of ${repo} in ${dir}`);
  // Copies of older builds of this repo, unused for an hour.
  for (const e of fs.readdirSync(os.tmpdir())) {
    const p = path.join(os.tmpdir(), e);
    if (e.startsWith(prefix) && p !== dir && Date.now() - fs.statSync(p).mtimeMs > 3_600_000) fs.rmSync(p, { recursive: true, force: true });
  }
  return dir;
}
