// The stall hedge (smtp-deadline.ts StallHedge, smtp.ts rounds): a reply a healthy server sends
// at once — greeting, EHLO, MAIL, RCPT, DATA — that does not begin within stall_timeout is taken
// for lost on the link (TCP's back-off after a loss is seconds and doubling); the connection is
// cut and the delivery runs again at once on a new connection (with twice the patience, then
// without the hedge). Before the end of the data the server has not taken the message, so this
// never doubles it. A server that is merely slow every time is learned and left alone;
// stall_timeout = "0" turns the hedge off.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/** The daemon's lines about hedging and racing, for an assertion's message. */
const hedging = (d: RunningDaemon): string =>
  `\n${d.logs().split('\n').filter((l) => /racing|stalled|silent|slow|deferred|delivered/.test(l)).join('\n')}`;

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
    assert.ok(took < 10_000, `delivered after ${took} ms: the second connection was not raced before the 10 s stall limit`);
    assert.is(sh.connections, 2);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    // Raced after 1 s (half the limit, capped): never sooner; a loaded machine's timers may be
    // late, but not by the 4 s more that half of the 10 s uncapped would be.
    const after = /session not set up yet; racing a second connection[^\n]*after=(\d+\.\d)s/.exec(d.logs());
    assert.ok(after && Number(after[1]) >= 1 && Number(after[1]) < 5, `raced after ${after?.[1]} s${hedging(d)}`);
    assert.not.match(d.logs(), / deferred /, hedging(d));
    assert.not.match(d.logs(), /stalled; trying once more/, hedging(d));
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
    // The first cut is replaced at once by a third connection (greeted at once); the second's
    // cut, half a second later, starts a fourth when the third is not set up yet by then (a
    // loaded machine): two under way until one is ready.
    assert.ok(sh.connections === 3 || sh.connections === 4, `${sh.connections} connections${hedging(d)}`);
    await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
    assert.is(sh.messages.length, 1);
    assert.match(d.logs(), /stalled; trying once more on a new connection[^\n]*sent nothing in reply to the connection \(greeting\) for 1 s \(stall_timeout\)/, hedging(d));
    assert.not.match(d.logs(), / deferred /, hedging(d));
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
    // A third only when the first set-up was slow enough (a loaded machine) to be raced: its
    // partner went idle, the retry may take it or a new one.
    const raced = /racing a second connection/.test(d.logs());
    assert.ok(sh.connections === 2 || (raced && sh.connections === 3), `${sh.connections} connections${hedging(d)}`);
    assert.is(sh.messages.length, 1);
    assert.match(d.logs(), /sent nothing in reply to MAIL FROM for 1 s \(stall_timeout\)/, hedging(d));
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
    // Two set-ups cut after 1 s, two after 2 s, then two waited for without the hedge.
    assert.is(sh.connections, 6, 'the first delivery was not hedged twice, then waited for');
    await d.waitForLog(/next hop answers slowly: stall_timeout not applied to it for 15 min[^\n]*hop=127\.0\.0\.1:/, 10_000);
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: two\r\n\r\nhello\r\n'), /^250 /);
    await sh.waitForMessages(2, 20_000);
    // Over the spare of the first delivery or one new connection; never cut.
    assert.ok(sh.connections <= 7, 'the second message was hedged or raced again');
    assert.is((d.logs().match(/stalled; trying once more/g) ?? []).length, 4);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('a route whose server answers at once: the stall limit follows its pace (1 s), not the 3 s of stall_timeout, and so does the raced set-up', async () => {
  // The 4th message's first greeting is lost; the three messages before it were answered within ms.
  let loseNext = false;
  const sh = await startSmarthost({ greetDelayMs: () => (loseNext ? ((loseNext = false), 60_000) : 0) });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "3s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  const send = async (i: number): Promise<string> => {
    const reply = await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], `Subject: pace ${i}\r\n\r\nhello\r\n`);
    assert.match(reply, /^250 /);
    await sh.waitForMessages(i, 20_000);
    return /queued as (\S+)/.exec(reply)![1]!;
  };
  try {
    for (let i = 1; i <= 3; i++) await send(i);
    // A set-up slow enough to be raced (a loaded machine) leaves an idle spare, which the 4th
    // message would take instead of a new set-up: none is left open.
    await waitFor('every connection closed', () => sh.closed === sh.connections, 20_000);
    const before = sh.connections;
    loseNext = true;
    const fourth = await send(4);
    // The 4th set-up gets its raced partner after half the pace's 1 s limit; with the 3 s of
    // stall_timeout it would be half of that, capped at 1 s.
    assert.is(sh.connections - before, 2, `${sh.connections - before} connections for the 4th message${hedging(d)}`);
    const after = new RegExp(`${fourth}: session not set up yet; racing a second connection[^\n]*after=(\\d+\\.\\d)s`).exec(d.logs());
    assert.ok(after, `no raced set-up${hedging(d)}`);
    assert.ok(Number(after[1]) < 1, `raced after ${after[1]} s, not after half of the pace's 1 s`);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test('on a route that answers at once, one long silence is taken for loss: the host is not learned as slow, its next session is still raced; a second one marks it slow', async () => {
  let mode: 'fast' | 'slow' | 'lost once' = 'fast';
  const sh = await startSmarthost({
    greetDelayMs: () => {
      if (mode === 'lost once') return (mode = 'fast'), 60_000;
      return mode === 'slow' ? 3000 : 0;
    },
  });
  const site = await makeSite('');
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "1s"\nmessages_per_connection = 1\n`);
  const d = await startDaemon(site);
  const send = async (n: number): Promise<string> => {
    const reply = await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], `Subject: ${mode} ${n}\r\n\r\nhello\r\n`);
    assert.match(reply, /^250 /);
    await sh.waitForMessages(n, 30_000);
    return /queued as (\S+)/.exec(reply)![1]!;
  };
  // No session (spares included) left open: the next message needs a new connection.
  const allClosed = () => waitFor('every connection closed', () => sh.closed === sh.connections, 20_000);
  try {
    // Sessions 1-3 answer at once: 15 reply samples, the route is fast.
    for (let i = 1; i <= 3; i++) await send(i);
    // Every greeting takes 3 s: set-ups cut after 1 s and 2 s, then two waited for — on a lossy
    // link that silence is loss, not a slow server.
    mode = 'slow';
    await send(4);
    // Learnt once the session has its 250, i.e. after the smarthost has the message: waited for.
    const [, silence] = await d.waitForLog(/next hop was silent for long once; taken for loss on the link, not a slow server[^\n]*silence=(\d+\.\d)s/, 10_000)
      .catch((e: Error) => { throw new Error(`${e.message}${hedging(d)}`); });
    // The 3 s greeting's silence as we saw it (from our side of the connect, later under load).
    assert.ok(Number(silence) >= 2, `silence=${silence}s: not the 3 s greeting`);
    assert.not.match(d.logs(), /answers slowly/, hedging(d));
    await allClosed();
    // The next set-up loses its greeting: it is still raced.
    mode = 'lost once';
    const fifth = await send(5);
    assert.match(d.logs(), new RegExp(`${fifth}: session not set up yet; racing a second connection`), 'message 5 was not raced');
    await allClosed();
    // A second long silence within 15 min: now it is the server, and the next message is
    // neither hedged nor raced.
    mode = 'slow';
    await send(6);
    await d.waitForLog(/next hop answers slowly: stall_timeout not applied to it for 15 min/, 10_000);
    await allClosed();
    const seventh = await send(7);
    assert.not.match(d.logs(), new RegExp(`${seventh}: (session not set up|stalled)`));
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
  // stall_timeout 2 s: a partner would be raced after 1 s (half, capped), well before the
  // 2.5 s password check ends, and a loaded machine's set-up before AUTH is not taken for one.
  site.route('far', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nstall_timeout = "2s"\nallow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${secret}"\n`);
  const d = await startDaemon(site);
  try {
    assert.match(await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], 'Subject: slow auth\r\n\r\nhello\r\n'), /^250 /);
    const [m] = await sh.waitForMessages(1, 20_000);
    assert.is(m!.user, 'me');
    assert.is(sh.connections, 1);
    assert.not.match(d.logs(), /racing a second connection/, hedging(d));
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
    assert.not.match(d.logs(), /stalled/, hedging(d));
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
