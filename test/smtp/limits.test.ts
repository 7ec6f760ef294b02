// Session limits of the SMTP front (src/smtp/wire/, server.ts, data-check.ts), each driven
// over real SMTP against the daemon: command and text line length, messages per connection,
// errors per session, session deadline and idle timeout, connections per client address and in
// total, the early-talker greeting delay, and unsynchronised pipelining after DATA.
//
// 127.0.0.2 is a second client on loopback (Linux routes all of 127/8 to lo), so "another client"
// tests need no namespace. trusted_networks is set to a documentation range: loopback is untrusted.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import path from 'node:path';
import { sleep, waitFor } from '../helpers/ports.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';

const { front, connect, session, transaction, assertInSync, assertQueueEmpty, assertDeliveredExactly, GOOD } = frontHelpers(test);
const UNTRUSTED = ['192.0.2.0/24'];
/** A local recipient me@tidemail.test whose delivery (a pipe alias) always succeeds. */
const localUser = () => `[local]\ndomains = ["tidemail.test"]\naliases = "${writeFile(path.join(tmpDir(), 'aliases'), 'me: "|cat >/dev/null"\n')}"\n`;

test('a command line over max_command_length gets 421 and the connection closes; one at the limit is parsed', async () => {
  const f = await front({ smtpToml: 'max_command_length = 600' });
  const c = await session(f.site.port);
  // 600 characters exactly: a command the parser reads (and refuses for its content, not its length).
  const atLimit = 'NOOP ' + 'x'.repeat(595);
  assert.match(await c.cmd(atLimit), /^250 /);
  const r = await c.cmd('NOOP ' + 'x'.repeat(700));
  assert.match(r, /^421 .*too long/i);
  await waitFor('the connection to close', () => c.closed, 3000);
  // The next client is served.
  const ok = await session(f.site.port);
  assert.match(await ok.cmd('NOOP'), /^250 /);
});

test('a text line over max_line_length in DATA gets 554 5.6.0 naming the limit; 998 characters pass', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const header = 'From: <a@tidemail.test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: lines\r\n\r\n';
  const r = await transaction(c, 'a@tidemail.test', ['far@remote.example'], header + 'a'.repeat(999) + '\r\n');
  assert.match(r, /^554 5\.6\.0 .*longer than 998 characters/);
  await assertInSync(c);
  await assertQueueEmpty(f.site, 'a refused long line');
  // Split across many small writes: the length is counted across chunks.
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<far@remote.example>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(header);
  for (let i = 0; i < 10; i++) c.write('b'.repeat(100));
  c.write('\r\n.\r\n');
  assert.match(await c.reply(), /^554 5\.6\.0 .*longer than 998/);
  assert.match(await transaction(c, 'a@tidemail.test', ['far@remote.example'], header + 'c'.repeat(998) + '\r\n'), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
});

test('max_messages_per_connection: an untrusted client\'s next MAIL gets 421 4.7.0 and it reconnects; trusted clients are not limited', async () => {
  const f = await front({ trusted: UNTRUSTED, extraToml: localUser(), smtpToml: 'max_messages_per_connection = 2\ngreet_delay = "0s"' });
  const c = await session(f.site.port);
  for (let i = 0; i < 2; i++) assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], GOOD), /^250 2\.0\.0 /);
  const r = await c.cmd('MAIL FROM:<x@remote.example>');
  assert.match(r, /^421 4\.7\.0 Too many messages in one session \(at most 2\)/);
  await waitFor('the connection to close', () => c.closed, 3000);
  const again = await session(f.site.port);
  assert.match(await transaction(again, 'x@remote.example', ['me@tidemail.test'], GOOD), /^250 2\.0\.0 /);

  const t = await front({ smarthost: true, smtpToml: 'max_messages_per_connection = 2' });
  const tc = await session(t.site.port);
  for (let i = 0; i < 4; i++) assert.match(await transaction(tc, 'a@tidemail.test', ['far@remote.example'], GOOD), /^250 2\.0\.0 /);
  await assertDeliveredExactly(t, 4);
});

test('max_errors: the refused command that reaches the limit is followed by 421 and a hang-up', async () => {
  const f = await front({ smtpToml: 'max_errors = 3' });
  const c = await session(f.site.port);
  assert.match(await c.cmd('BOGUS one'), /^500 /);
  assert.match(await c.cmd('RCPT TO:<x@tidemail.test>'), /^503 /);
  assert.match(await c.cmd('NOOP'), /^250 /); // successes do not reset the count, nor add to it
  assert.match(await c.cmd('BOGUS three'), /^500 /);
  assert.match(await c.reply(), /^421 4\.7\.0 Too many errors in this session \(3\)/);
  await waitFor('the connection to close', () => c.closed, 3000);
});

test('session_timeout ends a drip-feeding session with 421 4.4.2 even though it is never idle', async () => {
  const f = await front({ smtpToml: 'session_timeout = "2s"\ncommand_timeout = "10s"' });
  const c = await session(f.site.port);
  const t0 = Date.now();
  let last = '';
  // A NOOP every 250 ms (pacing, not a wait for time to pass: the session is never idle), until
  // the 421, which may come between two (then the socket is closed and it waits in the buffer).
  while (Date.now() - t0 < 9000) {
    last = c.closed ? await c.reply(100) : await c.cmd('NOOP');
    if (/^421/.test(last)) break;
    await sleep(250);
  }
  assert.match(last, /^421 4\.4\.2 Session time limit exceeded/);
  const took = Date.now() - t0;
  // Well before command_timeout (10 s), which a NOOP every 250 ms never lets fire anyway.
  assert.ok(took >= 1500 && took < 9000, `closed after ${took} ms`);
  await waitFor('the connection to close', () => c.closed, 3000);
});

test('command_timeout closes an idle session with 421', async () => {
  const f = await front({ smtpToml: 'command_timeout = "1s"' });
  const c = await session(f.site.port);
  assert.match(await c.reply(4000), /^421 .*Timeout/i);
  await waitFor('the connection to close', () => c.closed, 3000);
});

test('a flood of connections from one address is capped by max_connections_per_ip while another client is served', async () => {
  const f = await front({ trusted: UNTRUSTED, extraToml: localUser(), smtpToml: 'max_connections_per_ip = 3\ngreet_delay = "0s"' });
  const flood = await Promise.all(Array.from({ length: 20 }, () => connect(f.site.port)));
  const greetings = await Promise.all(flood.map((c) => c.reply(5000).catch((e: Error) => e.message)));
  const served = greetings.filter((g) => /^220 /.test(g)).length;
  const refused = greetings.filter((g) => /^421 4\.7\.0 Too many connections from your address \(at most 3\)/.test(g)).length;
  assert.is(served, 3, greetings.join('\n'));
  assert.is(refused, 17, greetings.join('\n'));
  // 127.0.0.2 is another client: it is greeted and its message for a local user is accepted.
  const other = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  assert.match(await transaction(other, 'x@remote.example', ['me@tidemail.test'], GOOD), /^250 2\.0\.0 /);
});

test('max_clients caps all connections together with 421 4.7.0', async () => {
  const f = await front({ smtpToml: 'max_clients = 2' });
  const a = await session(f.site.port);
  const b = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  const c = await connect(f.site.port, '127.0.0.1', '127.0.0.3');
  assert.match(await c.reply(), /^421 4\.7\.0 Too many connected clients/);
  a.close();
  // The slot is free once the server has seen the hang-up: until then a newcomer is still refused.
  const d = await waitFor('a free slot after a client left', async () => {
    const x = await connect(f.site.port, '127.0.0.1', '127.0.0.3');
    const greeting = await x.reply();
    if (/^220 /.test(greeting)) return x;
    assert.match(greeting, /^421 4\.7\.0 Too many connected clients/);
    x.close();
    return null;
  }, 10_000, 100);
  assert.match(await d.cmd('EHLO client.test'), /^250[ -]/);
  assert.match(await d.cmd('NOOP'), /^250 /);
  assert.match(await b.cmd('NOOP'), /^250 /);
});

test('greet_delay: an untrusted early talker is refused; a patient client is greeted after the delay', async () => {
  const f = await front({ trusted: UNTRUSTED, smtpToml: 'greet_delay = "600ms"' });
  const early = await connect(f.site.port);
  early.write('EHLO bot.example\r\n');
  assert.match(await early.reply(), /^421 .*talk too soon/i);
  await waitFor('the connection to close', () => early.closed, 3000);
  const t0 = Date.now();
  const patient = await connect(f.site.port);
  assert.match(await patient.reply(), /^220 /);
  assert.ok(Date.now() - t0 >= 550, `greeted after ${Date.now() - t0} ms`);
});

test('unsynchronised pipelining: message data sent before the 354 is refused with 554 5.5.0; nothing is queued', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  c.write(`MAIL FROM:<a@tidemail.test>\r\nRCPT TO:<far@remote.example>\r\nDATA\r\n${GOOD}.\r\n`);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^354 /);
  assert.match(await c.reply(), /^554 5\.5\.0 .*before the 354/);
  await assertInSync(c);
  await assertQueueEmpty(f.site, 'an unsynchronised DATA');
  // RFC 2920 pipelining done right — MAIL, RCPT, DATA in one write, the body after 354 — is fine.
  c.write('MAIL FROM:<a@tidemail.test>\r\nRCPT TO:<far@remote.example>\r\nDATA\r\n');
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^354 /);
  c.write(`${GOOD}.\r\n`);
  assert.match(await c.reply(), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
});

test.run();
