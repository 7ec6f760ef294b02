// The syntax check through createCheck with real TOML options: RFC 5322 header rules at DATA and
// HELO vetting, for trusted and untrusted clients.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { CheckContext, Verdict } from '../../src/checks/check.js';
import { createCheck, parseHeaderSection } from '../../src/checks/syntax.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { frontHelpers } from '../helpers/smtp-front.js';

const test = suite('checks/syntax');

const GOOD = [
  'From: Alice <alice@example.org>',
  'To: bob@tidemail.test',
  'Date: Wed, 25 Nov 2026 21:00:00 +0000',
  'Subject: hello',
  'Message-ID: <1@example.org>',
];

/** A data-phase context with both views of the header section, as the session gives them. */
function dataCtx(lines: string[], over: Partial<CheckContext> = {}): CheckContext {
  const headerSection = lines.join('\r\n') + '\r\n\r\n';
  return context('data', { recipients: ['bob@tidemail.test'], headerSection, headers: parseHeaderSection(headerSection), ...over });
}

const text = (v: Verdict) => (v.action === 'reject' || v.action === 'tempfail' || v.action === 'disconnect' ? `${v.code} ${v.enhanced} ${v.text}` : v.action);

test('a well-formed message passes', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  assert.equal(await check.run('data', dataCtx(GOOD)), { action: 'next' });
});

test('two From: fields are refused for anyone, naming the count and the RFC', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  const lines = [...GOOD, 'From: Mallory <m@example.net>'];
  for (const who of [{}, { trusted: true }, { authUser: 'alice' }]) {
    const v = await check.run('data', dataCtx(lines, who));
    assert.is(text(v), '554 5.6.0 Message has 2 From: header fields; at most one is allowed (RFC 5322 §3.6)');
  }
});

test('every at-most-once field of the RFC 5322 table is counted, case-insensitively', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  for (const [name, shown] of [['subject', 'Subject'], ['MESSAGE-ID', 'Message-ID'], ['Reply-To', 'Reply-To'], ['sender', 'Sender'], ['To', 'To'], ['date', 'Date']]) {
    const v = await check.run('data', dataCtx([...GOOD, 'Sender: a@example.org', 'Reply-To: b@example.org', `${name}: again`]));
    assert.match(text(v), new RegExp(`^554 5\\.6\\.0 Message has 2 ${shown}: header fields`), name);
  }
  // Fields that may repeat (Received, Comments, Resent-*) are fine.
  const many = [...GOOD, 'Received: from a', 'Received: from b', 'Comments: one', 'Comments: two', 'Resent-From: x@example.org', 'Resent-From: y@example.org'];
  assert.equal(await check.run('data', dataCtx(many)), { action: 'next' });
});

test('an untrusted client must send exactly one From: and one Date:; trusted and authenticated ones need not', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  const noFrom = GOOD.filter((l) => !l.startsWith('From:'));
  const noDate = GOOD.filter((l) => !l.startsWith('Date:'));
  assert.is(text(await check.run('data', dataCtx(noFrom))), '554 5.6.0 Message has no From: header field; exactly one is required (RFC 5322 §3.6)');
  assert.is(text(await check.run('data', dataCtx(noDate))), '554 5.6.0 Message has no Date: header field; exactly one is required (RFC 5322 §3.6)');
  assert.equal(await check.run('data', dataCtx(noFrom, { trusted: true })), { action: 'next' });
  assert.equal(await check.run('data', dataCtx(noDate, { authUser: 'alice' })), { action: 'next' });
});

test('8-bit header bytes: refused without SMTPUTF8, fine with it; trusted clients allowed by default', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  const lines = [...GOOD.filter((l) => !l.startsWith('Subject:')), 'Subject: Grüße aus Köln'];
  assert.is(text(await check.run('data', dataCtx(lines))),
    '554 5.6.0 Message header field Subject: contains 8-bit characters, but the client did not use SMTPUTF8; encode it as an RFC 2047 encoded-word');
  assert.equal(await check.run('data', dataCtx(lines, { smtputf8: true })), { action: 'next' });
  assert.equal(await check.run('data', dataCtx(lines, { trusted: true })), { action: 'next' });
  // A raw section decoded as latin1 (bytes ≥ 0x80 as such) is caught as well.
  const raw = Buffer.from('From: a@example.org\r\nDate: Wed, 25 Nov 2026 21:00:00 +0000\r\nX-Note: \xe9t\xe9\r\n\r\n', 'latin1').toString('latin1');
  assert.match(text(await check.run('data', context('data', { headerSection: raw }))), /header field X-Note: contains 8-bit/);

  const strict = await buildCheck(createCheck, 'syntax', '[checks.syntax]\neight_bit_headers = "refuse"\n');
  assert.is((await strict.run('data', dataCtx(lines, { trusted: true }))).action, 'reject');
  const lax = await buildCheck(createCheck, 'syntax', '[checks.syntax]\neight_bit_headers = "allow"\n');
  assert.is((await lax.run('data', dataCtx(lines))).action, 'next');
});

test('max_headers and max_header_size cap the header section', async () => {
  const check = await buildCheck(createCheck, 'syntax', '[checks.syntax]\nmax_headers = 20\nmax_header_size = "2K"\n');
  const received = Array.from({ length: 16 }, (_, i) => `Received: from hop${i}.example.org`);
  assert.is(text(await check.run('data', dataCtx([...received, ...GOOD]))), '552 5.3.4 Message has 21 header fields; the limit here is 20');
  assert.equal(await check.run('data', dataCtx([...received.slice(0, 15), ...GOOD])), { action: 'next' });
  const big = [...GOOD, `X-Padding: ${'x'.repeat(2048)}`];
  const v = await check.run('data', dataCtx(big));
  const size = Buffer.byteLength(big.join('\r\n') + '\r\n\r\n');
  assert.is(text(v), `552 5.3.4 Message header section is ${size} bytes; the limit here is 2048`);

  // The default cap is 1000 fields.
  const dflt = await buildCheck(createCheck, 'syntax');
  const thousand = Array.from({ length: 996 }, (_, i) => `X-H${i}: v`);
  assert.is((await dflt.run('data', context('data', { headers: parseHeaderSection([...GOOD, ...thousand].join('\r\n')) }))).action, 'reject');
  assert.is((await dflt.run('data', context('data', { headers: parseHeaderSection([...GOOD, ...thousand.slice(1)].join('\r\n')) }))).action, 'next');
});

test('a header section the session cut short at 64 KiB is refused by the default cap', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  // What the session hands over for a message whose header section never ends within 64 KiB.
  const cut = ([...GOOD, ...Array.from({ length: 2000 }, (_, i) => `X-Filler-${i}: ${'y'.repeat(40)}`)].join('\r\n')).slice(0, 64 * 1024);
  assert.is(text(await check.run('data', context('data', { headerSection: cut, headers: parseHeaderSection(cut) }))),
    '552 5.3.4 Message header section is at least 65536 bytes; the limit here is 65536');
  try {
    await buildCheck(createCheck, 'syntax', '[checks.syntax]\nmax_header_size = "1M"\n');
    assert.unreachable('accepted a cap above what the session keeps');
  } catch (err) {
    assert.match((err as Error).message, /'checks\.syntax\.max_header_size' is larger than the 64K of header section the SMTP session keeps/);
  }
});

test('headers only from the raw section are parsed, folded lines included', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  const section = 'From: a@example.org\r\nSubject: one\r\n two\r\nDate: Wed, 25 Nov 2026 21:00:00 +0000\r\nFrom:\r\n\tb@example.org\r\n\r\n';
  assert.equal(parseHeaderSection(section)[1], { name: 'Subject', value: 'one two' });
  assert.match(text(await check.run('data', context('data', { headerSection: section }))), /Message has 2 From: header fields/);
});

test('HELO: domain names and address literals pass, anything else is refused for untrusted clients', async () => {
  const check = await buildCheck(createCheck, 'syntax');
  const helo = (name: string, over: Partial<CheckContext> = {}) => check.run('helo', context('helo', { helo: name, ...over }));
  for (const ok of ['mail.example.org', 'MX1.Example.COM', 'a-b.example', '[192.0.2.1]', '[IPv6:2001:db8::1]', '[ipv6:::1]']) {
    assert.equal(await helo(ok), { action: 'next' }, ok);
  }
  const bad: [string, RegExp][] = [
    ['foo_bar.example.org', /"foo_bar\.example\.org" is neither a domain name nor an address literal/],
    ['-lead.example.org', /neither a domain name/],
    ['192.0.2.1', /is a bare IP address; an address literal needs brackets: \[192\.0\.2\.1\]/],
    ['2001:db8::1', /needs brackets: \[IPv6:2001:db8::1\]/],
    ['[192.0.2.300]', /is not a valid address literal/],
    ['[IPv6:zz::1]', /is not a valid IPv6 address literal/],
    ['DESKTOP-4711', /is not a fully qualified domain name/],
    ['example..org', /neither a domain name/],
    ['mail.example.org.', /neither a domain name/],
  ];
  for (const [name, re] of bad) {
    const v = await helo(name);
    assert.is(v.action, 'reject', name);
    assert.match(text(v), /^550 5\.7\.1 HELO\/EHLO name /);
    assert.match(text(v), re);
    assert.match(text(v), /\(RFC 5321 §4\.1\.1\.1\)$/);
  }
  assert.equal(await helo('DESKTOP-4711', { trusted: true }), { action: 'next' });
  assert.equal(await helo('foo_bar', { authUser: 'alice' }), { action: 'next' });
  const single = await buildCheck(createCheck, 'syntax', '[checks.syntax]\nhelo_fqdn = false\n');
  assert.equal(await single.run('helo', context('helo', { helo: 'DESKTOP-4711' })), { action: 'next' });
});

test('bad options fail with file:line and the fix', async () => {
  const toml = '[checks.syntax]\nmax_headers = 0\n';
  try {
    await buildCheck(createCheck, 'syntax', toml);
    assert.unreachable('accepted max_headers = 0');
  } catch (err) {
    assert.instance(err, ConfigError);
    assert.match((err as Error).message, /tidemail\.toml:2(?::\d+)?: 'checks\.syntax\.max_headers' must be a whole number ≥ 1/);
  }
  try {
    await buildCheck(createCheck, 'syntax', '[checks.syntax]\nmax_header = 10\n');
    assert.unreachable('accepted a typo');
  } catch (err) {
    assert.match((err as Error).message, /tidemail\.toml:2(?::\d+)?: 'checks\.syntax\.max_header' is not a known setting\n  fix: did you mean 'max_headers'\?/);
  }
});

// End to end: the daemon with syntax at helo and data (data is its default), a client on
// 127.0.0.1 that trusted_networks does not cover, and 127.0.0.2 that it does.
const { front, session, transaction, assertInSync } = frontHelpers(test);
const LOCAL_USER = '[local]\ndomains = ["tidemail.test"]\n[local.users]\nme = "root"\n';
const e2eSite = () =>
  front({ trusted: ['192.0.2.0/24', '127.0.0.2/32'], extraToml: `[checks]\nhelo = ["syntax"]\n${LOCAL_USER}`, smtpToml: 'greet_delay = "0s"' });
const msgOf = (lines: string[]) => lines.join('\r\n') + '\r\n\r\nbody\r\n';

test('e2e: an untrusted client is told over SMTP what is wrong with its header or HELO', async () => {
  const f = await e2eSite();
  const c = await session(f.site.port);
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], msgOf(GOOD)), /^250 /);
  assert.is(await transaction(c, 'x@remote.example', ['me@tidemail.test'], msgOf([...GOOD, 'From: other@example.net'])),
    '554 5.6.0 Message has 2 From: header fields; at most one is allowed (RFC 5322 §3.6)');
  assert.is(await transaction(c, 'x@remote.example', ['me@tidemail.test'], msgOf(GOOD.filter((l) => !l.startsWith('Date:')))),
    '554 5.6.0 Message has no Date: header field; exactly one is required (RFC 5322 §3.6)');
  await assertInSync(c);

  // A bad HELO is refused at the first MAIL (smtp-server has no HELO hook).
  const bad = await session(f.site.port);
  assert.match(await bad.cmd('EHLO foo_bar'), /^250[ -]/);
  assert.is(await bad.cmd('MAIL FROM:<x@remote.example>'), '550 5.7.1 HELO/EHLO name "foo_bar" is neither a domain name nor an address literal (RFC 5321 §4.1.1.1)');
  assert.match(await bad.cmd('EHLO [127.0.0.1]'), /^250[ -]/);
  assert.match(await bad.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
});

test('e2e: a trusted client may leave Date: out and use any HELO, but not send two From:', async () => {
  const f = await e2eSite();
  const c = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  assert.match(await c.cmd('EHLO printer'), /^250[ -]/);
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], msgOf(GOOD.filter((l) => !l.startsWith('Date:')))), /^250 /);
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], msgOf([...GOOD, 'From: other@example.net'])), /^554 5\.6\.0 Message has 2 From: header fields/);
});

test.run();
