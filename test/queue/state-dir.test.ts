// A state dir the daemon cannot write (read-only filesystem, full disk) stops it at start with
// one sentence naming the path, what the errno means and the fix, and a sysexits code — never a
// stack trace. Needs root for the read-only bind mount and the small tmpfs.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

const mounts: string[] = [];
test.after(() => {
  for (const m of mounts.reverse()) execFileSync('umount', ['-l', m]);
  cleanupTmp();
});

function readOnly(dir: string): void {
  execFileSync('mount', ['--bind', dir, dir]);
  mounts.push(dir);
  execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
}

const daemonOnce = (configPath: string) => runCli(['daemon', '--config', configPath], { timeoutMs: 10_000 });

function assertClear(r: { code: number | null; stderr: string }, code: number, where: string, what: RegExp): void {
  assert.equal(r.code, code, r.stderr);
  assert.ok(r.stderr.includes(where), `names ${where}:\n${r.stderr}`);
  assert.match(r.stderr, what);
  assert.not.match(r.stderr, /\n\s+at |Error:/, `no stack trace:\n${r.stderr}`);
}

if (!isRoot()) {
  test.skip('read-only and full state dirs (need root for mounts)', () => undefined);
} else {
  test('a state dir on a read-only filesystem: exit 73 with the path and the fix', async () => {
    const site = await makeSite();
    const d = await startDaemon(site);
    await d.stop();
    readOnly(site.stateDir);
    const r = await daemonOnce(site.configPath);
    assertClear(r, 73, site.stateDir, /read-only.*(remount|state_dir)/);
  });

  test('a state dir that must be created under a read-only directory: exit 73', async () => {
    const parent = tmpDir('tidemail-ro-');
    readOnly(parent);
    const site = await makeSite('', { stateDir: path.join(parent, 'state') });
    const r = await daemonOnce(site.configPath);
    assertClear(r, 73, parent, /read-only/);
  });

  test('a state dir on a full disk at start: exit 75 with the path and "free space"', async () => {
    const dir = tmpDir('tidemail-full-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tidemail-test', dir]);
    mounts.push(dir);
    // Fill it to the last block.
    const fd = fs.openSync(path.join(dir, 'filler'), 'w');
    try {
      for (;;) fs.writeSync(fd, Buffer.alloc(4096));
    } catch (err) {
      assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
    } finally {
      fs.closeSync(fd);
    }
    const site = await makeSite('', { stateDir: path.join(dir, 'state') });
    const r = await daemonOnce(site.configPath);
    assertClear(r, 75, path.join(dir, 'state'), /no space left.*free space/);
    // Nothing half-made is left that would later pass for a queue.
    assert.ok(!fs.existsSync(path.join(dir, 'state', 'queue.created')));
  });
}

test.run();
