// The stall hedge (smtp-deadline.ts StallHedge, smtp.ts rounds): a reply a healthy server sends
// at once — greeting, EHLO, MAIL, RCPT, DATA — that does not begin within stall_timeout is taken
// for lost on the link (TCP's back-off after a loss is seconds and doubling); the connection is
// cut and the delivery runs again at once on a new connection (with twice the patience, then
// without the hedge). Before the end of the data the server has not taken the message, so this
// never doubles it. A server that is merely slow every time is learned and left alone;
// stall_timeout = "0" turns the hedge off.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('a greeting lost on the first connection: cut after stall_timeout, delivered on a second connection at once', async () => {
  // The first connection is greeted only after 60 s (the greeting_timeout is minutes).
  const sh = await startSmarthost({ greetDelayMs: (n) => (n === 1 ? 60_000 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\n`);
  const d = await startDaemon(site);
  try {
    const started = Date.now();
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: lost greeting\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 20_000);
    assert.ok(Date.now() - started < 20_000);
    assert.is(sh.connections, 2);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    assert.match(d.logs(), /stalled; trying once more on a new connection[^\n]*sent nothing in reply to the connection \(greeting\) for 1 s \(stall_timeout\)/);
    // Not an attempt, not a deferral: the message went on the same run.
    assert.not.match(d.logs(), / deferred /);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a MAIL FROM reply lost: the delivery moves to a new connection and arrives exactly once', async () => {
  let stalls = 0;
  const sh = await startSmarthost({ stallMail: () => ++stalls === 1 });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: lost mail reply\r\nX-Tag: once\r\n\r\nhello\r\n'), /^250 /);
    await d.waitForLog(/ delivered [^\n]*route=far/, 20_000);
    assert.is(stalls, 2, 'MAIL FROM was not given again on a new connection');
    assert.is(sh.connections, 2);
    assert.is(sh.messages.length, 1);
    assert.match(d.logs(), /sent nothing in reply to MAIL FROM for 1 s \(stall_timeout\)/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a server slow to greet every time: delivered, learned as slow, and the next session is not cut', async () => {
  const sh = await startSmarthost({ greetDelayMs: () => 2500 });
  const site = await makeSite('');
  // One message per connection, so the second message needs a new session (and its greeting).
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: one\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 20_000);
    // Cut after 1 s, then after 2 s, then waited for without the hedge.
    assert.is(sh.connections, 3, 'the first delivery was not hedged twice, then waited for');
    await d.waitForLog(/next hop answers slowly: stall_timeout not applied to it for 15 min[^\n]*hop=127\.0\.0\.1:/, 10_000);
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: two\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(2, 20_000);
    assert.is(sh.connections, 4, 'the second message was hedged again');
    assert.is((d.logs().match(/stalled; trying once more/g) ?? []).length, 2);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a route whose server answers at once: the stall limit follows its pace (1 s), not the 3 s of stall_timeout', async () => {
  // The 4th connection's greeting is lost; the three before it answered everything within ms.
  const sh = await startSmarthost({ greetDelayMs: (n) => (n === 4 ? 60_000 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "3s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  try {
    for (let i = 1; i <= 4; i++) {
      assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], `Subject: pace ${i}\r\n\r\nhello\r\n`), /^250 /);
      await sh.waitForMessages(i, 20_000);
    }
    assert.is(sh.connections, 5);
    assert.match(d.logs(), /sent nothing in reply to the connection \(greeting\) for 1 s \(stall_timeout\)/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('stall_timeout = "0": a slow greeting is waited for on the one connection', async () => {
  const sh = await startSmarthost({ greetDelayMs: () => 2000 });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "0"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: patient\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 20_000);
    assert.is(sh.connections, 1);
    assert.not.match(d.logs(), /stalled/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
