// The daemon's maildrop pickup under a tight disk (src/queue/maildrop-space.ts): below
// [queue] queue_minfree it leaves sendmail's files where they are, says so once in the log, in
// status and in check, and picks them up by itself once space is freed; a file whose copy would
// reach into the reserve's lower half waits while smaller ones go on. The state dir is on a
// 16 MiB tmpfs, so this needs root (as CI runs), like queue/free-space.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { smallDisk, unmountDisks } from '../helpers/disk.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

const MiB = 1024 * 1024;

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

const freeOn = (state: string) => {
  const st = fs.statfsSync(path.dirname(state));
  return Number(st.bavail) * Number(st.bsize);
};

/** Leaves about `bytes` free on the disk (one more filler file beside the state dir). */
function leaveFree(state: string, bytes: number): void {
  const want = freeOn(state) - bytes;
  const dir = path.dirname(state);
  if (want > 0) fs.writeFileSync(path.join(dir, `filler${fs.readdirSync(dir).filter((n) => n.startsWith('filler')).length}`), Buffer.alloc(want, 0x78));
}

const removeFillers = (state: string) => {
  const dir = path.dirname(state);
  for (const n of fs.readdirSync(dir)) if (n.startsWith('filler')) fs.rmSync(path.join(dir, n));
};

const count = (d: RunningDaemon, re: RegExp) => d.logs().split('\n').filter((l) => re.test(l)).length;
/** sendmail's files still in the maildrop (not the dot names). */
const waiting = (state: string) => fs.readdirSync(path.join(state, 'maildrop')).filter((n) => !n.startsWith('.'));

async function sendmail(site: TestSite, rcpt: string, input: string): Promise<void> {
  const r = await runCli(['-i', '-C', site.configPath, rcpt], { argv0: 'sendmail', input });
  assert.is(r.code, 0, r.stderr);
}

const mailq = async (site: TestSite) => (await runCli(['mailq', '--config', site.configPath])).stdout;
const status = async (site: TestSite) => (await runCli(['status', '--config', site.configPath])).stdout;

async function site16M() {
  const state = smallDisk(16 * 1024);
  const site = await makeSite('[queue]\nqueue_minfree = "4M"', { stateDir: state, smtpToml: 'max_message_size = "10M"' });
  return { state, site, d: await startDaemon(site) };
}

if (!isRoot()) {
  test.skip('maildrop pickup under a tight disk (needs root for a tmpfs mount)', () => undefined);
} else {
  test('below queue_minfree the pickup waits: files stay, one log line, status and check say so; freed space resumes it by itself', async () => {
    const { state, site, d } = await site16M();
    try {
      leaveFree(state, 3 * MiB); // below the 4 MiB reserve, above the half sendmail may not use
      const content = 'Subject: cron\n\nreport\n';
      await sendmail(site, 'one@remote.example', content);
      await d.waitForLog(/maildrop pickup paused: free space below queue_minfree/);
      await sendmail(site, 'two@remote.example', content);
      const line = await waitFor('status to show both waiting', async () => {
        const m = /^maildrop pickup paused: 2 files wait, free [\d.]+ MiB < reserve 4\.0 MiB .*$/m.exec(await status(site));
        return m?.[0];
      }, 10_000, 200);
      assert.match(line, /free [23]\.\d MiB/);
      const json = JSON.parse((await runCli(['status', '--json', '--config', site.configPath])).stdout) as { maildropWait: { files: number; why: string } };
      assert.is(json.maildropWait.files, 2);
      assert.is(json.maildropWait.why, 'reserve');
      assert.is(waiting(state).length, 2, 'both files are still in the maildrop');
      assert.match(await mailq(site), /Mail queue is empty; 2 message\(s\) wait in the maildrop/);
      assert.is(count(d, /maildrop pickup paused/), 1, `one line, not one per scan:\n${d.logs()}`);
      assert.match(d.logs(), /maildrop pickup paused: .* files=1 free="[\d.]+ MiB" needed="4\.0 MiB" queue_minfree="4\.0 MiB"/);
      const check = await runCli(['check', '--config', site.configPath], { timeoutMs: 60_000 });
      assert.match(check.stdout, /maildrop pickup paused: 2 files wait, free [\d.]+ MiB < reserve 4\.0 MiB/);

      // The admin frees space; nothing pokes the daemon: it looks again by itself.
      removeFillers(state);
      await waitFor('the files to be picked up', () => waiting(state).length === 0, 20_000, 100);
      await d.waitForLog(/maildrop pickup resumed: free space is back free="[\d.]+ MiB" needed="4\.0 MiB"/);
      const q = await mailq(site);
      assert.ok(q.includes('one@remote.example') && q.includes('two@remote.example'), q);
      assert.is(count(d, /maildrop pickup paused/), 1, d.logs());
      assert.is(count(d, /maildrop pickup resumed/), 1, d.logs());
      assert.not.match(await status(site), /maildrop pickup paused/);
    } finally {
      await d.stop();
    }
  });

  test('a file whose copy would reach into the reserve\'s lower half waits; smaller files go on; it is taken once space is back', async () => {
    const { state, site, d } = await site16M();
    try {
      leaveFree(state, 8 * MiB);
      // 3 MiB: sendmail takes it (8 - 3 >= half of the 4 MiB reserve), leaving ~5 MiB free —
      // above the reserve, but less than half of it + 1.5 x 3 MiB = 6.5 MiB for the copy.
      const big = `Subject: big\n\n${'z'.repeat(999)}\n`.repeat(3 * 1024);
      await sendmail(site, 'big@remote.example', big);
      await d.waitForLog(/maildrop pickup paused: a file too large for the free space above the reserve/);
      const free = freeOn(state);
      assert.ok(free >= 4 * MiB && free < 6.5 * MiB, `free ${free}`);
      await sendmail(site, 'small@remote.example', 'Subject: small\n\nx\n');
      await waitFor('the small one queued', async () => (await mailq(site)).includes('small@remote.example'), 10_000, 200);
      assert.is(waiting(state).length, 1, 'the big one waits');
      assert.match(await status(site), /^maildrop pickup paused: 1 file waits, free [\d.]+ MiB < 6\.[45] MiB needed to copy it/m); // half of 4 MiB + 1.5 x ~3 MiB
      assert.not.match(await mailq(site), /big@remote\.example/);

      removeFillers(state);
      await waitFor('the big one picked up', () => waiting(state).length === 0, 20_000, 100);
      await waitFor('in the queue', async () => (await mailq(site)).includes('big@remote.example'), 10_000, 200);
      assert.is(count(d, /maildrop pickup resumed/), 1, d.logs());
      assert.is(count(d, /maildrop pickup paused/), 1, d.logs());
    } finally {
      await d.stop();
    }
  });
}

test.run();
