// Temporary failures: retried with backoff, one delay warning to the sender, and a bounce when
// the maximum lifetime is over — with durations scaled down to seconds.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('4xx: retried, one delay warning, then an expiry bounce; never a bounce before that', async () => {
  const sh = await startSmarthost({ rcptReply: (a) => (a === 'slow@remote.example' ? '450 4.2.1 mailbox busy, try later' : null) });
  const site = await makeSite('[queue]\nretry_min = "1s"\nretry_max = "1s"\ndelay_warning = "2s"\nmax_lifetime = "5s"');
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    await sendMessage(site.port, 'author@remote.example', ['slow@remote.example'], 'Subject: patience\r\nMessage-ID: <p@x>\r\n\r\nx\r\n');
    await d.waitForLog(/deferred to=<slow@remote\.example>.*attempts=2/, 10_000);
    const [warning] = await sh.waitForMessages(1, 10_000);
    assert.equal(warning!.from, '');
    assert.equal(warning!.to, ['author@remote.example']);
    const w = warning!.raw.toString();
    assert.match(w, /Subject: Delayed Mail \(still being retried\)/);
    assert.match(w, /Action: delayed\r\nStatus: 4\.2\.1/);
    assert.match(w, /you do not need to resend it/);
    const msgs = await sh.waitForMessages(2, 15_000);
    const bounce = msgs[1]!.raw.toString();
    assert.match(bounce, /Subject: Undelivered Mail Returned to Sender/);
    assert.match(bounce, /Action: failed\r\nStatus: 4\.4\.7/);
    assert.match(bounce, /expired after 5s in the queue; last error: 450 4\.2\.1 mailbox busy/);
    assert.match(bounce, /Message-ID: <p@x>/);
    const attempts = Number(/bounced: expired to=<slow@remote\.example>/.test(d.logs()) && (d.logs().match(/deferred to=<slow@remote\.example>/g) ?? []).length);
    assert.ok(attempts >= 3, `only ${attempts} attempts before expiry`);
    // Exactly one warning, one bounce.
    assert.equal(sh.messages.length, 2);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
