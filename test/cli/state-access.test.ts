// Read-only commands run by a user who may not enter the state dir (0700, another owner): a clear
// "permission denied" naming the state dir and the fix, EX_NOPERM (77); `tidemail check` says it
// could not look (SKIP), not "probe failed, report it". Through the real launcher.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import { makeSite, runCli, type TestSite } from '../helpers/daemon.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const NOBODY = { uid: 65534, gid: 65534 };
const noStack = (s: string) => assert.not.match(s, /^\s+at /m, `stack trace:\n${s}`);

/** A site whose state dir (with a queue in it, made by root) has `mode`. */
async function lockedSite(mode: number): Promise<TestSite> {
  const site = await makeSite();
  const r = await runCli(['mailq', '--config', site.configPath]); // creates the queue as root
  assert.is(r.code, 0, r.stderr);
  fs.chmodSync(site.stateDir, mode);
  return site;
}

if (!isRoot()) {
  test.skip('needs root: another user and a state dir it may not enter', () => undefined);
} else {
  for (const cmd of ['status', 'mailq']) {
    test(`${cmd} as a user who cannot enter the state dir: 77, names the state dir and the fix`, async () => {
      const site = await lockedSite(0o700);
      const r = await runCli([cmd, '--config', site.configPath], NOBODY);
      assert.is(r.code, 77, r.stderr);
      assert.match(r.stderr, new RegExp(`^tidemail: permission denied: the state dir ${site.stateDir} cannot be entered by this user \\(mode 0700, owner uid 0\\).*\\n  fix: run this as root or as the daemon's user`));
      noStack(r.stderr);
    });
  }

  test('tidemail log as that user: 77 (was "no queue database", 66); with the dir only traversable: 77 (was an internal error, 70)', async () => {
    const site = await lockedSite(0o700);
    const r = await runCli(['log', '--since', '1h', '--config', site.configPath], NOBODY);
    assert.is(r.code, 77, r.stderr);
    assert.match(r.stderr, /permission denied: the state dir .* cannot be entered by this user/);
    fs.chmodSync(site.stateDir, 0o711);
    fs.chmodSync(`${site.stateDir}/queue.sqlite`, 0o644);
    const t = await runCli(['log', '--since', '1h', '--config', site.configPath], NOBODY);
    assert.is(t.code, 77, t.stderr);
    assert.match(t.stderr, /permission denied: the message history \S+queue\.sqlite\) can be read only by root and the daemon's user/);
    noStack(r.stderr + t.stderr);
  });

  test('tidemail check as that user: the state dir is SKIP (could not look), not a FAIL asking for a bug report', async () => {
    const site = await lockedSite(0o700);
    const r = await runCli(['check', '--config', site.configPath], NOBODY);
    assert.match(r.stdout, /SKIP  state dir +cannot look as this user \(EACCES/);
    assert.not.match(r.stdout, /probe failed|report it/);
    noStack(r.stdout + r.stderr);
  });
}

test.run();
