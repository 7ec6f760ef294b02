// The daemon started as root checks, before it drops to its run user, that this user can still
// read the code it loads later and reach the state dir; if not it stops at once with what to do
// (exit 77, no stack trace) instead of failing at the first lazy import. Only as root: without
// root there is no drop.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, CODE, makeSite, type TestSite } from './helpers/daemon.js';
import { cleanupTmp, isRoot, tmpDir } from './helpers/tmp.js';

test.after(() => cleanupTmp());

/** Runs `node BIN daemon` until it exits (a refusal) or is ready (then stops it): exit code and output. */
function runDaemonOnce(bin: string, site: TestSite): Promise<{ code: number | null; out: string }> {
  const proc = spawn(process.execPath, [bin, 'daemon', '--config', site.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const onData = (d: Buffer) => {
    out += d;
    if (/daemon ready/.test(out)) proc.kill('SIGTERM');
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  return new Promise((resolve) => proc.on('exit', (code) => {
    clearTimeout(timer);
    resolve({ code, out });
  }));
}

/** The package as a clone in root's home has it: bin/ and dist/src under a directory only root may enter. */
function privateCopy(): { closed: string; bin: string } {
  const closed = tmpDir('tidemail-private-');
  fs.chmodSync(closed, 0o700);
  const pkg = path.join(closed, 'tidemail');
  fs.mkdirSync(path.join(pkg, 'dist'), { recursive: true, mode: 0o755 });
  fs.cpSync(path.join(CODE, 'bin'), path.join(pkg, 'bin'), { recursive: true });
  fs.cpSync(path.join(CODE, 'dist', 'src'), path.join(pkg, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(CODE, 'package.json'), path.join(pkg, 'package.json'));
  fs.symlinkSync(path.join(CODE, 'node_modules'), path.join(pkg, 'node_modules'));
  return { closed, bin: path.join(pkg, 'bin', 'tidemail.js') };
}

const assertNoStackTrace = (out: string) => assert.not.match(out, /^\s+at .+:\d+:\d+\)?$/m, `a stack trace:\n${out}`);

test('as root, code the run user cannot read: exit 77 naming the user, the blocking directory and the fixes', async () => {
  if (!isRoot()) return; // no privilege drop without root
  const { closed, bin } = privateCopy();
  const site = await makeSite();
  const r = await runDaemonOnce(bin, site);
  assert.is(r.code, 77, r.out);
  assert.match(r.out, /^tidemail: tidemail runs as user "nobody" after start, but "nobody" cannot read /m);
  assert.ok(r.out.includes(`cannot read ${path.join(closed, 'tidemail', 'dist', 'src')} (EACCES: ${closed} is mode 0700, owner root)`), r.out);
  assert.match(r.out, /install the package \(npm install -g tidemail, or the \.deb\/\.ipk\)/);
  assert.ok(r.out.includes(`chmod o+x ${closed}`), r.out);
  assert.ok(r.out.includes(`set user = "NAME" in ${site.configPath}`), r.out);
  assertNoStackTrace(r.out);
  assert.not.match(r.out, /daemon ready|listening/, 'it bound its ports before refusing');

  // The same copy where every user may enter starts: the check refuses only what it must.
  fs.chmodSync(closed, 0o755);
  const ok = await runDaemonOnce(bin, await makeSite());
  assert.match(ok.out, /daemon ready/);
  assert.is(ok.code, 0, ok.out);
});

test('as root, a state dir the run user cannot reach: exit 77 naming it and the fix', async () => {
  if (!isRoot()) return;
  const closed = tmpDir('tidemail-private-');
  fs.chmodSync(closed, 0o700);
  const stateDir = path.join(closed, 'state');
  const site = await makeSite('', { stateDir });
  const r = await runDaemonOnce(BIN, site);
  assert.is(r.code, 77, r.out);
  assert.ok(r.out.includes(`tidemail runs as user "nobody" after start, but "nobody" cannot reach its state dir ${stateDir} (EACCES: ${closed} is mode 0700, owner root)`), r.out);
  assert.ok(r.out.includes(`set state_dir in ${site.configPath} to a directory outside ${closed}`), r.out);
  assertNoStackTrace(r.out);
});

test.run();
