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
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('a greeting lost on the first connection: a second connection raced beside it after half the stall limit delivers the message', async () => {
  // The first connection is greeted only after 60 s (the greeting_timeout is minutes). With
  // stall_timeout 10s the hedge alone would cut it after 10 s; the raced set-up starts after
  // 1 s (half the limit, at most 1 s) and wins.
  const sh = await startSmarthost({ greetDelayMs: (n) => (n === 1 ? 60_000 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "10s"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: lost greeting\r\n\r\nhello\r\n'), /^250 /);
    const accepted = Date.now();
    await sh.waitForMessages(1, 20_000);
    const took = Date.now() - accepted;
    assert.ok(took < 7_000, `delivered after ${took} ms: the second connection was not raced before the 10 s stall limit`);
    assert.is(sh.connections, 2);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    assert.match(d.logs(), /session not set up yet; racing a second connection[^\n]*after=1\.\ds/);
    assert.not.match(d.logs(), / deferred /);
    assert.not.match(d.logs(), /stalled; trying once more/);
    assert.is(sh.messages.length, 1);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a greeting lost on both raced connections: cut after stall_timeout, delivered on the next round at once', async () => {
  const sh = await startSmarthost({ greetDelayMs: (n) => (n <= 2 ? 60_000 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: lost greetings\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 20_000);
    assert.is(sh.connections, 3);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    assert.match(d.logs(), /stalled; trying once more on a new connection[^\n]*sent nothing in reply to the connection \(greeting\) for 1 s \(stall_timeout\)/);
    assert.not.match(d.logs(), / deferred /);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a spare raced connection that greets late is kept idle and carries the next message', async () => {
  // Connection 1 greets after 1.5 s: connection 2 (raced after 1 s) has won by then; 1 becomes
  // a spare, and the second message goes over it without a new connection.
  const sh = await startSmarthost({ greetDelayMs: (n) => (n === 1 ? 1500 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "10s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: one\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(1, 20_000);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    // The late greeting is 1.5 s after connection 1 began; wait until it has been answered.
    await waitFor('the late greeting', () => sh.greeted >= 2, 10_000);
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: two\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(2, 20_000);
    assert.is(sh.connections, 2, 'the second message did not use the spare connection');
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
    // Two set-ups raced and cut after 1 s, two after 2 s, then one waited for without the hedge.
    assert.is(sh.connections, 5, 'the first delivery was not hedged twice, then waited for');
    await d.waitForLog(/next hop answers slowly: stall_timeout not applied to it for 15 min[^\n]*hop=127\.0\.0\.1:/, 10_000);
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: two\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(2, 20_000);
    assert.is(sh.connections, 6, 'the second message was hedged or raced again');
    assert.is((d.logs().match(/stalled; trying once more/g) ?? []).length, 2);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a route whose server answers at once: the stall limit follows its pace (1 s), not the 3 s of stall_timeout, and so does the raced set-up', async () => {
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
    // The 4th set-up gets its raced partner after half the pace's 1 s limit; with the 3 s of
    // stall_timeout it would be half of that, capped at 1 s.
    assert.is(sh.connections, 5);
    const after = /racing a second connection[^\n]*after=(\d+\.\d)s/.exec(d.logs());
    assert.ok(after, 'no raced set-up');
    assert.ok(Number(after[1]) < 1, `raced after ${after[1]} s, not after half of the pace's 1 s`);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('on a route that answers at once, one long silence is taken for loss: the host is not learned as slow, its next session is still hedged; a second one marks it slow', async () => {
  // Sessions 1-3 answer at once (15 reply samples: the route is fast). Connections 4-8 greet
  // only after 3 s: two raced set-ups cut after 1 s, two after 2 s, then one waited for — on a
  // lossy link that silence is loss, not a slow server. Connection 9 (the next message) loses
  // its greeting: it must still be raced.
  let slowAgain = false;
  const sh = await startSmarthost({ greetDelayMs: (n) => ((n >= 4 && n <= 8) || (slowAgain && n <= 15) ? 3000 : n === 9 ? 60_000 : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  try {
    for (let i = 1; i <= 5; i++) {
      assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], `Subject: fast ${i}\r\n\r\nhello\r\n`), /^250 /);
      await sh.waitForMessages(i, 30_000);
    }
    assert.is(sh.connections, 10);
    assert.match(d.logs(), /next hop was silent for long once; taken for loss on the link, not a slow server[^\n]*silence=3\.\ds/);
    assert.not.match(d.logs(), /answers slowly/);
    // Message 4's two hedged rounds, and message 5's.
    assert.is((d.logs().match(/racing a second connection/g) ?? []).length, 3, 'message 5 was not raced');
    // A second long silence within 15 min: now it is the server (connections 11-15, message 6),
    // and message 7 (connection 16) is neither hedged nor raced.
    slowAgain = true;
    for (let i = 6; i <= 7; i++) {
      assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], `Subject: slow ${i}\r\n\r\nhello\r\n`), /^250 /);
      await sh.waitForMessages(i, 30_000);
    }
    await d.waitForLog(/next hop answers slowly: stall_timeout not applied to it for 15 min/, 10_000);
    assert.is(sh.connections, 16);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a session already in AUTH gets no raced partner: a slow password check is waited for, one login', async () => {
  const sh = await startSmarthost({ auth: { user: 'me', pass: 'right' }, authDelayMs: 2500 });
  const site = await makeSite('');
  const secret = `${site.dir}/secrets/far`;
  writeSecret(secret, 'right\n');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\nallow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${secret}"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: slow auth\r\n\r\nhello\r\n'), /^250 /);
    const [m] = await sh.waitForMessages(1, 20_000);
    assert.is(m!.user, 'me');
    assert.is(sh.connections, 1);
    assert.not.match(d.logs(), /racing a second connection/);
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
