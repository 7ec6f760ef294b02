// A result that cannot be stored (the state disk fills up right as a delivery ends) must not
// become a duplicate storm or a lost bounce: the daemon remembers it in memory, pauses the
// route, retries the write with back-off, and records it once space is back. Uses a small
// tmpfs that the smarthost fills on receipt, so it needs root.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { fillDisk, freeDisk, smallDisk, unmountDisks } from '../helpers/disk.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

const count = (d: RunningDaemon, re: RegExp) => (d.logs().match(new RegExp(re.source, 'g')) ?? []).length;
const copies = (sh: { messages: { raw: Buffer }[] }, tag: string) => sh.messages.filter((m) => m.raw.includes(`X-Tag: ${tag}\r\n`)).length;

async function mailq(configPath: string): Promise<string> {
  const r = await runCli(['mailq', '--config', configPath]);
  return r.stdout + r.stderr;
}

if (!isRoot()) {
  test.skip('results that cannot be recorded (needs root for a tmpfs mount)', () => undefined);
} else {
  test('disk full as a delivery succeeds: one copy, route paused, recorded once space is back; kill -9 → at most one more', async () => {
    const state = smallDisk(4096);
    let fillOnReceipt = false;
    const sh = await startSmarthost({
      onMessage: () => {
        if (fillOnReceipt) fillDisk(state);
        fillOnReceipt = false;
      },
    });
    const site = await makeSite('', { stateDir: state });
    site.route('isp', smarthostRoute(sh.port));
    let d = await startDaemon(site);
    try {
      fillOnReceipt = true;
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: once\r\nX-Tag: m1\r\n\r\nx\r\n'), /^250 /);
      // The old code re-sent at once, over and over: stop looking as soon as a second copy shows.
      await waitFor('the could-not-record line (or a duplicate)', () => /could not record/.test(d.logs()) || copies(sh, 'm1') > 1, 15_000, 20);
      assert.equal(copies(sh, 'm1'), 1, `the message was sent ${copies(sh, 'm1')} times`);
      await waitFor('two back-off retries', () => count(d, /still cannot record/) >= 2 || copies(sh, 'm1') > 1, 15_000, 50);
      assert.equal(copies(sh, 'm1'), 1, `the message was sent ${copies(sh, 'm1')} times while the disk was full`);
      const st = await runCli(['status', '--config', site.configPath]);
      assert.match(st.stdout, /paused/i, st.stdout);
      // Space is back: the delivery is recorded, not repeated.
      freeDisk(state);
      await d.waitForLog(/delivery results recorded/, 90_000);
      await waitFor('an empty queue', async () => /Mail queue is empty/.test(await mailq(site.configPath)), 10_000, 200);
      assert.equal(copies(sh, 'm1'), 1);

      // Again, but the daemon is killed while the result is only in memory.
      fillOnReceipt = true;
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: twice at most\r\nX-Tag: m2\r\n\r\nx\r\n'), /^250 /);
      await waitFor('the second could-not-record line', () => count(d, /could not record/) >= 2 || copies(sh, 'm2') > 1, 15_000, 20);
      assert.equal(copies(sh, 'm2'), 1);
      await d.kill9();
      freeDisk(state);
      d = await startDaemon(site);
      await d.waitForLog(/delivered to=<z@remote\.example>/, 15_000);
      await waitFor('an empty queue after the restart', async () => /Mail queue is empty/.test(await mailq(site.configPath)), 10_000, 200);
      assert.ok(copies(sh, 'm2') <= 2, `${copies(sh, 'm2')} copies after one restart`);
      assert.equal(copies(sh, 'm1'), 1);
    } finally {
      await d.stop();
      await sh.close();
    }
  });

  test('a bounce that cannot be queued: the original stays until the DSN is stored, then the DSN is sent', async () => {
    const state = smallDisk(4096);
    const sh = await startSmarthost({
      rcptReply: (a) => {
        if (a !== 'gone@remote.example') return null;
        fillDisk(state);
        return '550 5.1.1 no such user';
      },
    });
    const site = await makeSite('', { stateDir: state });
    site.route('isp', smarthostRoute(sh.port));
    const d = await startDaemon(site);
    try {
      assert.match(await sendMessage(site.port, 'author@remote.example', ['gone@remote.example'], 'Subject: to nobody\r\nMessage-ID: <gone@x>\r\n\r\nx\r\n'), /^250 /);
      await d.waitForLog(/could not record/, 15_000);
      assert.match(await mailq(site.configPath), /gone@remote\.example/, 'the original left the queue before its bounce was stored');
      freeDisk(state);
      const [dsn] = await sh.waitForMessages(1, 90_000);
      assert.equal(dsn!.from, '');
      assert.equal(dsn!.to, ['author@remote.example']);
      assert.match(dsn!.raw.toString(), /Action: failed\r\nStatus: 5\.1\.1/);
      assert.match(dsn!.raw.toString(), /Message-ID: <gone@x>/);
      await waitFor('the original gone from the queue', async () => /Mail queue is empty/.test(await mailq(site.configPath)), 10_000, 200);
      assert.equal(sh.messages.length, 1, 'more than one DSN');
    } finally {
      await d.stop();
      await sh.close();
    }
  });
}

test.run();
