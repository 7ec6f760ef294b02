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

test.run();
