// A result that cannot be stored (the state disk fills up right as a delivery ends) must not
// become a duplicate storm or a lost bounce: the daemon remembers it in memory, pauses the
// route, retries the write with back-off, and records it once space is back. Uses a small
// tmpfs that the smarthost fills on receipt, so it needs root.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { fillDisk, freeDisk, smallDisk, unmountDisks } from '../helpers/disk.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

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

// These disks fill after the mail was taken, which is what they test: without the free-space
// reserve (queue_minfree, src/queue/free-space.ts), which would refuse the mail on a 4 MiB disk.
const NO_RESERVE = '[queue]\nqueue_minfree = "0"\n';

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
    const site = await makeSite(NO_RESERVE, { stateDir: state });
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
    const site = await makeSite(NO_RESERVE, { stateDir: state });
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

  test('local lane: the MDA delivers, then the disk is full: one copy in the mailbox, recorded once space is back', async () => {
    const state = smallDisk(4096);
    // The MDA runs as the mailbox's user: it fills the disk through a directory anyone may write.
    const spare = path.join(path.dirname(state), 'spare');
    fs.mkdirSync(spare, { mode: 0o777 });
    fs.chmodSync(spare, 0o777);
    const box = tmpDir('tidemail-box-');
    fs.chmodSync(box, 0o777);
    const mda = writeFile(path.join(box, 'mda'), `#!/bin/sh\ncat >/dev/null\necho copy >> ${box}/copies\ncat /dev/zero >> ${spare}/filler 2>/dev/null\nexit 0\n`, 0o755);
    const site = await makeSite(`[local]\naliases = ""\ndelivery = "mda"\nmda = ["${mda}"]\nusers = { admin = "daemon" }\n${NO_RESERVE}`, { stateDir: state });
    const d = await startDaemon(site);
    const copiesInBox = () => (fs.existsSync(`${box}/copies`) ? fs.readFileSync(`${box}/copies`, 'utf8').split('\n').filter(Boolean).length : 0);
    try {
      assert.match(await sendMessage(site.port, 'a@remote.example', ['admin@tidemail.test'], 'Subject: local\r\n\r\nx\r\n'), /^250 /);
      await waitFor('the could-not-record line (or a duplicate)', () => /could not record delivery results.*route=local/.test(d.logs()) || copiesInBox() > 1, 15_000, 20);
      await waitFor('two back-off retries', () => count(d, /still cannot record/) >= 2 || copiesInBox() > 1, 15_000, 50);
      assert.equal(copiesInBox(), 1, `${copiesInBox()} copies in the mailbox`);
      fs.rmSync(path.join(spare, 'filler'));
      await d.waitForLog(/delivery results recorded route=local/, 90_000);
      await waitFor('an empty queue', async () => /Mail queue is empty/.test(await mailq(site.configPath)), 10_000, 200);
      assert.equal(copiesInBox(), 1);
    } finally {
      await d.stop();
    }
  });

  test('no route and a full disk: the "waiting for a route" note cannot be written, and passes do not spin', async () => {
    const state = smallDisk(4096);
    const site = await makeSite(`${NO_RESERVE}no_route_recheck = "1s"`, { stateDir: state });
    const d = await startDaemon(site);
    try {
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: nowhere\r\n\r\nx\r\n'), /^250 /);
      await d.waitForLog(/accepted from=<a@tidemail\.test>/);
      fillDisk(state);
      const failed = /could not record mail waiting for a route|delivery pass failed/;
      const first = await waitFor('a failed write', () => (count(d, failed) >= 1 ? Date.now() : 0), 15_000, 20);
      const third = await waitFor('three failed writes', () => (count(d, failed) >= 3 ? Date.now() : 0), 15_000, 20);
      // One look per recheck interval (1 s), not a tight loop.
      assert.ok(third - first >= 1500, `3 failed writes in ${third - first} ms`);
      freeDisk(state);
      assert.match(await mailq(site.configPath), /z@remote\.example/);
    } finally {
      await d.stop();
    }
  });
}

test.run();
