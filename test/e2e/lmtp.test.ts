// Local delivery over LMTP to a real Dovecot: delivered before the 250, a result per recipient.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { haveDovecotLmtp, startDovecotLmtp } from '../helpers/dovecot-lmtp.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

(haveDovecotLmtp() ? test : test.skip)('Dovecot sees LMTP-delivered mail before the 250; its refusal of one user bounces that one only', async () => {
  // "daemon" and "bin" exist as system users (so tidemail knows them); Dovecot serves daemon and bin but not sys.
  const dovecot = await startDovecotLmtp(['daemon', 'bin']);
  const sh = await startSmarthost();
  const site = await makeSite(`[local]\naliases = ""\ndelivery = "lmtp"\nlmtp = "127.0.0.1:${dovecot.port}"`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const r = await sendMessage(site.port, 'author@remote.example', ['daemon@tidemail.test', 'bin@tidemail.test'], 'Subject: lmtp\r\n\r\nhello dovecot\r\n');
    assert.match(r, /^250 /);
    assert.equal(dovecot.messages('daemon').length, 1, 'not in daemon\'s Maildir at 250 time');
    assert.equal(dovecot.messages('bin').length, 1);
    assert.match(dovecot.messages('daemon')[0]!, /hello dovecot/);
    // Only recipient refused by Dovecot: a 5xx in session, no bounce.
    const r2 = await sendMessage(site.port, 'author@remote.example', ['sys@tidemail.test'], 'Subject: nobody home\r\n\r\nx\r\n');
    assert.match(r2, /^550 /);
    // One accepted and one refused: 250, and a bounce for the refused one.
    const r3 = await sendMessage(site.port, 'author@remote.example', ['daemon@tidemail.test', 'sys@tidemail.test'], 'Subject: mixed\r\n\r\nx\r\n');
    assert.match(r3, /^250 /);
    const [dsn] = await sh.waitForMessages(1);
    assert.equal(dsn!.to, ['author@remote.example']);
    assert.match(dsn!.raw.toString(), /Final-Recipient: rfc822; sys@tidemail\.test\r\nAction: failed\r\nStatus: 5\.1\.1/);
    assert.equal(dovecot.messages('daemon').length, 2);
    await d.waitForLog(/delivered to=<daemon@tidemail\.test> route=local/);
  } finally {
    await d.stop();
    await sh.close();
    await dovecot.stop();
  }
});

test.run();
