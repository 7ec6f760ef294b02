// A link-down after our end of the data (smtp.ts REPLY_GRACE_MS): the server may already have
// the message, so its reply is awaited for a moment instead of cutting the session at once. When
// the link was not dead after all (`tidemail link down` by hand, a detector that was wrong) the
// reply arrives, the message counts as delivered and is not sent a second time.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('`tidemail link down` while the end-of-data reply is on its way: delivered once, not interrupted', async () => {
  let received = 0;
  // The message is recorded at once, its 250 comes 1.5 s later.
  const sh = await startSmarthost({ dataDelayMs: 1500, onMessage: () => void received++ });
  const site = await makeSite('');
  site.route('isp', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\n`);
  const d = await startDaemon(site);
  try {
    const body = (tag: string) => `Subject: ${tag}\r\nX-Tag: ${tag}\r\n\r\nhello\r\n`;
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], body('grace-1')), /^250 /);
    await waitFor('the smarthost holding the message, its reply not sent yet', () => received === 1, 10_000);
    const down = await runCli(['link', 'down', 'isp', '--config', site.configPath]);
    assert.is(down.code, 0, down.stderr);
    await d.waitForLog(/ delivered [^\n]*route=isp/, 10_000);
    assert.not.match(d.logs(), /interrupted by link down/);
    // Back up, and a second message through: the first is not in the queue to be sent again.
    assert.is((await runCli(['link', 'up', 'isp', '--config', site.configPath])).code, 0);
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], body('grace-2')), /^250 /);
    await sh.waitForMessages(2, 15_000);
    await d.waitForLog(/ delivered [^\n]*route=isp[\s\S]* delivered [^\n]*route=isp/, 10_000);
    const tags = sh.messages.map((m) => /X-Tag: (\S+)/.exec(m.raw.toString())?.[1]);
    assert.equal(tags, ['grace-1', 'grace-2']);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('stopping the daemon: a session held for its end-of-data reply is cut at once, one stuck on a silent server after 10 s; the message stays queued', async () => {
  // The smarthost takes the message and never answers its end of data.
  const sh = await startSmarthost({ stallData: () => true });
  const site = await makeSite('');
  site.route('isp', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\n`);
  const d = await startDaemon(site);
  let again: Awaited<ReturnType<typeof startDaemon>> | null = null;
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: held\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 10_000);
    assert.is((await runCli(['link', 'down', 'isp', '--config', site.configPath])).code, 0);
    await d.waitForLog(/link down after the end of the data: waiting for the reply/, 10_000);
    // Held while the link is down — until the daemon is told to stop: not data_done_timeout (10 min).
    const t0 = Date.now();
    assert.is(await d.stop(), 0);
    assert.ok(Date.now() - t0 < 8000, `stop took ${Date.now() - t0} ms`);
    assert.match(d.logs(), /interrupted by link down; stays queued[^\n]*after the end of the data/);
    // Started again, it sends the message again (at-least-once) — to a server that again says
    // nothing after the data: a stop waits 10 s for deliveries in flight, then cuts them.
    again = await startDaemon(site);
    await sh.waitForMessages(2, 15_000);
    const t1 = Date.now();
    assert.is(await again.stop(), 0);
    assert.ok(Date.now() - t1 < 20_000, `second stop took ${Date.now() - t1} ms`);
    assert.match(again.logs(), /stopping: 1 deliveries still in flight after 10 s are cut/);
    const q = await runCli(['mailq', '--config', site.configPath]);
    assert.match(q.stdout, /you@far\.example/);
  } finally {
    await d.stop();
    await again?.stop();
    await sh.close();
  }
});

test.run();
