// The SMTP front door (src/smtp/server.ts, wire/, receive.ts), driven through the real
// daemon process: extensions, listeners, greeting, relay control, command errors, refused DATA
// (bare CR/LF, NUL, smuggling, size) and what is left in the queue after each refusal.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Db } from '../../src/queue/db.js';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { freePort, sleep, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { frontHelpers, ipv6Loopback, type SmtpFrontUnderTest } from '../helpers/smtp-front.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const { front, connect, session, transaction, assertInSync, assertOneEnhancedCode, queueRows, assertQueueEmpty, assertMailqEmpty, assertDeliveredExactly, GOOD } = frontHelpers(test);
type Front = SmtpFrontUnderTest;

// --- extensions and listeners -------------------------------------------------------------

test('EHLO advertises PIPELINING, SIZE <max_message_size>, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES', async () => {
  const f = await front({ smtpToml: 'max_message_size = 123457' });
  const c = await connect(f.site.port);
  assert.match(await c.reply(), /^220 /);
  const ehlo = await c.cmd('EHLO client.test');
  const lines = ehlo.split(/\r?\n/);
  assert.match(lines.at(-1)!, /^250 /);
  assert.ok(lines.slice(0, -1).every((l) => l.startsWith('250-')), ehlo);
  const keywords = lines.slice(1).map((l) => l.slice(4));
  for (const k of ['PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']) assert.ok(keywords.includes(k), `${k} missing from\n${ehlo}`);
  assert.ok(keywords.includes('SIZE 123457'), `SIZE 123457 missing from\n${ehlo}`);
  // Not offered until they are implemented: a client must not be invited to use them.
  assert.not.ok(keywords.some((k) => /^(STARTTLS|AUTH)\b/.test(k)), ehlo);
});

/** Local users for the relay tests: they exist (RCPT is accepted) and their delivery defers. */
function localUsersToml(): string {
  const file = writeFile(path.join(tmpDir(), 'aliases'), 'me: "|exit 75"\nother: "|exit 75"\nyou: "|exit 75"\npostmaster: "|exit 75"\n');
  return `[local]\naliases = "${file}"\n`;
}

(ipv6Loopback ? test : test.skip)('listens on IPv4 and IPv6 at once; trust is decided per client address', async () => {
  // Only the IPv4 loopback is trusted, so the same request relays over one listener and not the other.
  const f = await front({ ipv6: true, trusted: ['127.0.0.0/8'], smarthost: true, extraToml: localUsersToml() });
  assert.match(f.d.logs(), new RegExp(`listen=127\\.0\\.0\\.1:${f.site.port},\\[::1\\]:${f.port6}`));
  const v4 = await session(f.site.port, '127.0.0.1');
  const v6 = await connect(f.port6, '::1');
  assert.match(await v6.reply(), /^220 /);
  const ehlo6 = await v6.cmd('EHLO client.test');
  assert.match(ehlo6, /Nice to meet you, \[::1\]/);
  for (const k of ['PIPELINING', 'SIZE', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']) assert.match(ehlo6, new RegExp(`^250[ -]${k}\\b`, 'm'));

  assert.match(await v6.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  assert.match(await v6.cmd('RCPT TO:<far@remote.example>'), /^554 5\.7\.1 .*Relay access denied/);
  assert.match(await v6.cmd('RCPT TO:<me@tidemail.test>'), /^250 /);
  assert.match(await v6.cmd('RSET'), /^250 /);

  assert.match(await transaction(v4, 'a@tidemail.test', ['far@remote.example'], GOOD), /^250 2\.0\.0 /);
  const [m] = await f.sh!.waitForMessages(1);
  assert.equal(m!.to, ['far@remote.example']);
});

// --- greeting -----------------------------------------------------------------------------

test('trusted clients are greeted at once: talking before the greeting is not refused', async () => {
  const f = await front();
  // Many at once: under load the gap between greeting and readiness used to be visible.
  const results = await Promise.all(
    Array.from({ length: 25 }, async () => {
      const c = await connect(f.site.port);
      c.write('EHLO early.test\r\n');
      return [await c.reply().catch((e: Error) => e.message), await c.reply().catch((e: Error) => e.message)];
    }),
  );
  for (const [greeting, ehlo] of results) {
    assert.match(greeting!, /^220 tidemail\.test ESMTP/);
    assert.match(ehlo!, /^250-tidemail\.test/);
  }
});

test('untrusted clients that talk before the greeting are refused (smtp-server early-talker check)', async () => {
  const f = await front({ trusted: ['10.0.0.0/8'] });
  const c = await connect(f.site.port);
  c.write('EHLO early.test\r\n');
  assert.match(await c.reply(), /^421 .*talk too soon/i);
  await waitFor('the connection to close', () => c.closed, 2000);
  // The same client waiting for its greeting is served normally.
  const ok = await connect(f.site.port);
  const t0 = Date.now();
  assert.match(await ok.reply(), /^220 /);
  assert.ok(Date.now() - t0 >= 90, 'untrusted greeting came without the early-talker delay');
  assert.match(await ok.cmd('EHLO patient.test'), /^250-/);
});

// --- relay control ------------------------------------------------------------------------

test('untrusted clients may send to local domains only: others get 554 5.7.1 Relay access denied', async () => {
  const f = await front({ trusted: ['10.0.0.0/8'], extraToml: localUsersToml() + 'domains = ["tidemail.test", "lan.example"]\n' });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<someone@remote.example>'), /^250 /);
  for (const rcpt of ['far@remote.example', 'x@sub.tidemail.test', 'x@[192.0.2.1]']) {
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    assert.match(r, /^554 5\.7\.1 .*Relay access denied/, rcpt);
    assertOneEnhancedCode(r);
  }
  for (const rcpt of ['me@tidemail.test', 'Other@TIDEMAIL.TEST', 'you@lan.example', 'postmaster']) {
    assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^250 /, rcpt);
  }
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(GOOD + '.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 /);
  // The refused recipients are not part of the envelope.
  const db = await Db.open(path.join(f.site.stateDir, 'queue.sqlite'), true);
  const rcpts = (await db.all<{ address: string }>('SELECT address FROM recipients ORDER BY env_id')).map((r) => r.address);
  await db.close();
  assert.equal(rcpts, ['me@tidemail.test', 'Other@TIDEMAIL.TEST', 'you@lan.example', 'postmaster@tidemail.test']);
  assert.match(f.d.logs(), /relay denied client=127\.0\.0\.1 rcpt=<far@remote\.example>/);
});

test('trusted clients may relay to any domain', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  assert.match(await transaction(c, 'a@tidemail.test', ['x@one.example', 'y@two.example'], GOOD), /^250 2\.0\.0 /);
  const [m] = await f.sh!.waitForMessages(1);
  assert.equal(m!.to.sort(), ['x@one.example', 'y@two.example']);
});

// --- malformed commands -------------------------------------------------------------------

test('command errors get 5xx and leave the session usable', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const expect = async (line: string, re: RegExp) => {
    const r = await c.cmd(line);
    assert.match(r, re, `${line} → ${r}`);
    assertOneEnhancedCode(r);
  };
  await expect('FROBNICATE now', /^5\d\d /);
  await expect('MAIL FROM:a@tidemail.test', /^501 /);
  await expect('MAIL FROM:<a b@tidemail.test>', /^501 /);
  await expect('MAIL FROM:<a@bad..domain>', /^501 /);
  await expect('MAIL FROM:<a@tidemail.test> SIZE=lots', /^501 /);
  await expect('RCPT TO:<x@remote.example>', /^503 /);
  await expect('DATA', /^503 /);
  await expect('MAIL FROM:<a@tidemail.test>', /^250 /);
  await expect('MAIL FROM:<again@tidemail.test>', /^503 /);
  await expect('DATA', /^503 /);
  await expect('RCPT TO:x@remote.example', /^501 5\.1\.3 /);
  await expect('RCPT TO:<x y@remote.example>', /^501 5\.1\.3 /);
  await expect('RCPT TO:<x@bad..domain>', /^501 5\.1\.3 /);
  await expect('RCPT TO:<@remote.example>', /^501 5\.1\.3 /);
  await expect('RCPT TO:<x@>', /^501 5\.1\.3 /);
  // The transaction begun above survived all of that.
  await expect('RCPT TO:<ok@remote.example>', /^250 /);
  await expect('DATA', /^354 /);
  c.write(GOOD + '.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 /);
  await assertInSync(c);
  const [m] = await f.sh!.waitForMessages(1);
  assert.is(m!.from, 'a@tidemail.test');
  assert.equal(m!.to, ['ok@remote.example']);
});

test('max_recipients: the recipient over the limit gets 452 4.5.3; the others are delivered', async () => {
  const f = await front({ smarthost: true, smtpToml: 'max_recipients = 3' });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  for (const n of [1, 2, 3]) assert.match(await c.cmd(`RCPT TO:<r${n}@remote.example>`), /^250 /);
  for (const n of [4, 5]) {
    const r = await c.cmd(`RCPT TO:<r${n}@remote.example>`);
    assert.match(r, /^452 4\.5\.3 /);
    assertOneEnhancedCode(r);
  }
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(GOOD + '.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 /);
  // The limit is per message: the next transaction starts counting again.
  assert.match(await transaction(c, 'a@tidemail.test', ['s1@remote.example', 's2@remote.example', 's3@remote.example'], GOOD), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 2);
  const all = f.sh!.messages.flatMap((m) => m.to).sort();
  assert.equal(all, ['r1@remote.example', 'r2@remote.example', 'r3@remote.example', 's1@remote.example', 's2@remote.example', 's3@remote.example']);
});

// --- refused DATA -------------------------------------------------------------------------

test('bare LF, bare CR and NUL in DATA get 554 5.6.0; nothing is stored or delivered', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const cases: [string, string | Buffer, RegExp][] = [
    ['bare LF', 'Subject: lf\r\n\r\nline one\nline two\r\n', /^554 5\.6\.0 .*bare LF/],
    ['bare LF first', '\nSubject: lf\r\n\r\nx\r\n', /^554 5\.6\.0 .*bare LF/],
    ['bare CR', 'Subject: cr\r\n\r\nline one\rline two\r\n', /^554 5\.6\.0 .*bare CR/],
    ['CR CR LF', 'Subject: cr\r\n\r\nline one\r\r\n', /^554 5\.6\.0 .*bare CR/],
    ['NUL', Buffer.from('Subject: nul\r\n\r\nli\0ne\r\n', 'binary'), /^554 5\.6\.0 .*NUL/],
    // Long enough that the refused part spans several chunks and queue pages.
    ['bare LF after 200 KiB', 'Subject: big\r\n\r\n' + ('y'.repeat(998) + '\r\n').repeat(200) + 'late\nLF\r\n', /^554 5\.6\.0 .*bare LF/],
  ];
  for (const [name, body, re] of cases) {
    const r = await transaction(c, 'a@tidemail.test', ['v@remote.example'], body);
    assert.match(r, re, `${name}: ${r}`);
    assertOneEnhancedCode(r);
    await assertQueueEmpty(f.site, name);
    await assertInSync(c);
  }
  await assertMailqEmpty(f.site);
  assert.is(f.sh!.messages.length, 0);
  // A good message after all that goes through, and it is the only one that does.
  assert.match(await transaction(c, 'a@tidemail.test', ['v@remote.example'], GOOD), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
  assert.match(f.sh!.messages[0]!.raw.toString(), /this one is fine\r\n$/);
});

test('SMTP smuggling: a fake end of data with bare CR/LF is refused as one message; nothing smuggled gets through', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const smuggled = 'MAIL FROM:<evil@x.example>\r\nRCPT TO:<victim@remote.example>\r\nDATA\r\nFrom: ceo@tidemail.test\r\n\r\nsmuggled\r\n';
  // The 13 fake terminators of the SMTP smuggling catalogue (CVE-2023-51764/51765/51766 and the
  // SEC Consult scanner): bare LF and bare CR forms, their mixes, and NUL next to the dot.
  const fakeEnds = [
    '\n.\n', '\n.\r\n', '\r.\r', '\r.\r\n', '\r\n.\r', '\r\n.\n', '\r\n.\rX\r\n',
    '\r.\n', '\n.\r', '\r\r\n.\r\r\n', '\r\n.\r\r\n', '\r\n\0.\r\n', '\r\n.\0\r\n',
  ];
  assert.is(new Set(fakeEnds).size, 13);
  for (const end of fakeEnds) {
    const body = `Subject: innocent\r\n\r\nhello${end}${smuggled}`;
    const r = await transaction(c, 'a@tidemail.test', ['friend@remote.example'], body);
    assert.match(r, /^554 5\.6\.0 .*(bare (CR|LF)|NUL)/, `${JSON.stringify(end)}: ${r}`);
    // One reply for the whole DATA: the smuggled commands were never read as commands.
    await assertInSync(c);
    await assertQueueEmpty(f.site, JSON.stringify(end));
  }
  // Pipelined in one write, as a smuggling client would send it.
  c.write(`MAIL FROM:<a@tidemail.test>\r\nRCPT TO:<friend@remote.example>\r\nDATA\r\nSubject: x\r\n\r\nhi\n.\n${smuggled}.\r\nNOOP\r\n`);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^354 /);
  assert.match(await c.reply(), /^554 5\.6\.0 /);
  assert.match(await c.reply(), /^250 /); // the NOOP
  await assertInSync(c);
  await assertMailqEmpty(f.site);
  assert.match(await transaction(c, 'a@tidemail.test', ['friend@remote.example'], GOOD), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
  const [m] = f.sh!.messages;
  assert.is(m!.from, 'a@tidemail.test');
  assert.equal(m!.to, ['friend@remote.example']);
  assert.not.match(m!.raw.toString(), /smuggled|evil/);
  assert.not.match(f.d.logs(), /evil@|victim@/);
});

test('Authentication-Results claiming our host name are removed (RFC 8601 §5); others stay byte for byte', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const body =
    'Authentication-Results: TIDEMAIL.TEST;\r\n\tdkim=pass header.d=bank.example\r\n' +
    'Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=a@tidemail.test\r\n' +
    'Authentication-Results: (forged) tidemail.test; dmarc=pass\r\n' +
    'From: <a@tidemail.test>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: a-r\r\n\r\n' +
    'Authentication-Results: tidemail.test; in the body this is just text\r\n';
  assert.match(await transaction(c, 'a@tidemail.test', ['far@remote.example'], body), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
  const raw = f.sh!.messages[0]!.raw.toString('latin1');
  assert.not.match(raw, /dkim=pass header\.d=bank|dmarc=pass/);
  assert.ok(raw.includes('Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=a@tidemail.test\r\nFrom: <a@tidemail.test>\r\n'), raw);
  assert.ok(raw.endsWith('\r\n\r\nAuthentication-Results: tidemail.test; in the body this is just text\r\n'), raw);
});

test('SIZE over the limit in MAIL FROM gets 552; the limit itself is allowed', async () => {
  const f = await front({ smtpToml: 'max_message_size = 300000' });
  const c = await session(f.site.port);
  const r = await c.cmd('MAIL FROM:<a@tidemail.test> SIZE=300001');
  assert.match(r, /^552 5\.3\.4 /);
  assertOneEnhancedCode(r);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test> SIZE=99999999999'), /^552 /);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test> SIZE=300000'), /^250 /);
  assert.match(await c.cmd('RSET'), /^250 /);
});

test('a message that grows past max_message_size while streaming gets 552 5.3.4; nothing is kept; the session goes on', async () => {
  const max = 300_000;
  const f = await front({ smarthost: true, smtpToml: `max_message_size = ${max}` });
  const c = await session(f.site.port);
  const line = 'z'.repeat(998) + '\r\n';
  const sized = (n: number) => {
    const head = 'Subject: sized\r\n\r\n';
    const lines = line.repeat(Math.floor((n - head.length) / line.length));
    const rest = n - head.length - lines.length;
    return head + lines + 'q'.repeat(rest - 2) + '\r\n';
  };
  for (const size of [max + 1, 2 * max]) {
    const body = sized(size);
    assert.is(body.length, size);
    const r = await transaction(c, 'a@tidemail.test', ['big@remote.example'], body);
    assert.match(r, /^552 5\.3\.4 /, `${size} bytes: ${r}`);
    assertOneEnhancedCode(r);
    await assertInSync(c);
    await assertQueueEmpty(f.site, `a ${size}-byte message`);
  }
  await assertMailqEmpty(f.site);
  // Exactly at the limit is fine (the count is of message bytes, after dot-unstuffing).
  const exact = sized(max).replace(/^z/m, '.');
  const stuffed = exact.replace(/^\./gm, '..');
  assert.match(await transaction(c, 'a@tidemail.test', ['big@remote.example'], stuffed), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
  assert.ok(f.sh!.messages[0]!.raw.toString().endsWith(exact), 'the message at the limit was altered');
});

test('a client that disconnects mid-DATA leaves nothing in the queue', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<gone@remote.example>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  // Several 64 KiB queue chunks' worth, so some were already written when the client vanishes.
  c.write('Subject: cut off\r\n\r\n' + ('w'.repeat(998) + '\r\n').repeat(300));
  await waitFor('chunks to be spooled', async () => (await queueRows(f.site)).chunks > 0, 5000);
  c.close();
  await waitFor('the spooled chunks to be dropped', async () => (await queueRows(f.site)).chunks === 0, 5000).catch(async () => {
    assert.unreachable(`chunks left in the queue after the client went away: ${JSON.stringify(await queueRows(f.site))}`);
  });
  await assertQueueEmpty(f.site, 'the disconnect');
  await sleep(200);
  assert.is(f.sh!.messages.length, 0);
  const c2 = await session(f.site.port);
  assert.match(await transaction(c2, 'a@tidemail.test', ['back@remote.example'], GOOD), /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
});

// --- 8-bit and SMTPUTF8 -------------------------------------------------------------------

test('SMTPUTF8 addresses and an 8-bit body are accepted and delivered intact', async () => {
  const f = await front({ smarthost: true });
  const c = await session(f.site.port);
  const body = Buffer.concat([
    Buffer.from('Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße aus Köln, 日本語, ½ €\r\n', 'utf8'),
    // Not valid UTF-8: 8BITMIME is about octets, and they must pass untouched.
    Buffer.from([0xe9, 0xff, 0x80, 0xa0, 0x0d, 0x0a]),
  ]);
  const r = await transaction(c, 'jöe@tidemail.test', ['zoë@remote.example'], body, ' SMTPUTF8 BODY=8BITMIME');
  assert.match(r, /^250 2\.0\.0 /);
  await assertDeliveredExactly(f, 1);
  const [m] = f.sh!.messages;
  assert.is(m!.from, 'jöe@tidemail.test');
  assert.equal(m!.to, ['zoë@remote.example']);
  assert.ok(m!.raw.length > body.length);
  assert.is(m!.raw.subarray(m!.raw.length - body.length).toString('hex'), body.toString('hex'), 'the 8-bit body was altered');
  assert.match(m!.raw.subarray(0, m!.raw.length - body.length).toString('utf8'), /^Received: from client\.test [^\r\n]*\r\n(\t[^\r\n]+\r\n)+$/);
});

test.run();
