// ratelimit through createCheck with real TOML options; windows of a second or two, really waited.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Check, CheckContext, Verdict } from '../../src/checks/check.js';
import { createCheck, ipKey, parseLimit } from '../../src/checks/ratelimit.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { sleep } from '../helpers/ports.js';

const test = suite('checks/ratelimit');
const open: Check[] = [];
test.after.each(async () => {
  for (const c of open.splice(0)) await c.close?.();
});

async function make(options: string, phases = { rcpt: ['relay', 'recipients', 'ratelimit'], data: ['ratelimit'] }): Promise<Check> {
  const check = await buildCheck(createCheck, 'ratelimit', `[checks.ratelimit]\n${options}`, { phases });
  open.push(check);
  return check;
}

const msg = (over: Partial<CheckContext> = {}) => context('data', { recipients: ['bob@tidemail.test'], ...over });
const rcpt = (over: Partial<CheckContext> = {}) => context('rcpt', { recipient: 'bob@tidemail.test', ...over });
const text = (v: Verdict) => (v.action === 'tempfail' ? `${v.code} ${v.enhanced} ${v.text}` : v.action);

test('limits: COUNT/DURATION', () => {
  assert.equal(parseLimit('100/1h'), { max: 100, windowMs: 3_600_000, text: 'per 1h' });
  assert.equal(parseLimit('500 / 1d'), { max: 500, windowMs: 86_400_000, text: 'per 1d' });
  assert.is(parseLimit('5/m')?.windowMs, 60_000);
  for (const bad of ['100', '100/', 'many/1h', '100/soon', '100/0s']) assert.is(parseLimit(bad), null, bad);
});

test('per_ip counts messages at DATA; the one over the limit gets 450 4.7.1 with the wait', async () => {
  const check = await make('per_ip = "3/2s"\n');
  for (let i = 0; i < 3; i++) assert.equal(await check.run('data', msg()), { action: 'next' }, `message ${i + 1}`);
  assert.is(text(await check.run('data', msg())), '450 4.7.1 Rate limit exceeded for client 198.51.100.7: at most 3 messages per 2s; try again in 2 seconds');
  // RCPT is refused early once the limit is used up; other clients are not affected.
  assert.is((await check.run('rcpt', rcpt())).action, 'tempfail');
  assert.equal(await check.run('data', msg({ clientAddress: '198.51.100.8' })), { action: 'next' });
  await sleep(2100);
  assert.equal(await check.run('rcpt', rcpt()), { action: 'next' }, 'the window slid past');
  assert.equal(await check.run('data', msg()), { action: 'next' });
});

test('RCPT only looks, never counts', async () => {
  const check = await make('per_ip = "2/1h"\n');
  for (let i = 0; i < 10; i++) assert.equal(await check.run('rcpt', rcpt()), { action: 'next' });
  assert.equal(await check.run('data', msg()), { action: 'next' });
  assert.equal(await check.run('data', msg()), { action: 'next' });
  assert.match(text(await check.run('rcpt', rcpt())), /^450 4\.7\.1 Rate limit exceeded for client 198\.51\.100\.7: at most 2 messages per 1h; try again in 3[56]\d\d seconds$/);
});

test('per_user counts authenticated users only; per_sender_domain by domain, not the null sender', async () => {
  const check = await make('per_user = "2/1h"\nper_sender_domain = "3/1h"\n');
  const alice = { authUser: 'alice', sender: 'alice@example.org' };
  assert.equal(await check.run('data', msg({ ...alice, clientAddress: '192.0.2.1' })), { action: 'next' });
  assert.equal(await check.run('data', msg({ ...alice, clientAddress: '192.0.2.2' })), { action: 'next' });
  assert.is(text(await check.run('data', msg({ ...alice, clientAddress: '192.0.2.3' }))), '450 4.7.1 Rate limit exceeded for user alice: at most 2 messages per 1h; try again in 3600 seconds');
  // The refused message was charged nowhere: example.org has used 2 of its 3.
  assert.equal(await check.run('data', msg({ sender: 'carol@EXAMPLE.org' })), { action: 'next' });
  assert.is(text(await check.run('data', msg({ sender: 'dave@example.org' }))), '450 4.7.1 Rate limit exceeded for sender domain example.org: at most 3 messages per 1h; try again in 3600 seconds');
  for (let i = 0; i < 5; i++) assert.equal(await check.run('data', msg({ sender: '' })), { action: 'next' }, 'bounces have no domain');
});

test('count = "recipients" charges each recipient, and RCPT refuses the one that would not fit', async () => {
  const check = await make('per_ip = "3/1h"\ncount = "recipients"\n');
  assert.equal(await check.run('data', msg({ recipients: ['a@tidemail.test', 'b@tidemail.test'] })), { action: 'next' });
  assert.equal(await check.run('rcpt', rcpt()), { action: 'next' });
  assert.match(text(await check.run('rcpt', rcpt({ recipients: ['a@tidemail.test'] }))), /at most 3 recipients per 1h/);
  assert.is((await check.run('data', msg({ recipients: ['a@tidemail.test', 'b@tidemail.test'] }))).action, 'tempfail');
  assert.equal(await check.run('data', msg()), { action: 'next' });
});

test('IPv6 clients are counted per /64', async () => {
  assert.is(ipKey('2001:db8:0:7::1'), '2001:db8:0:7::/64');
  assert.is(ipKey('::ffff:192.0.2.1'), '192.0.2.1');
  const check = await make('per_ip = "1/1h"\n');
  assert.equal(await check.run('data', msg({ clientAddress: '2001:db8:0:7::1' })), { action: 'next' });
  assert.match(text(await check.run('data', msg({ clientAddress: '2001:db8:0:7:abcd::2' }))), /for client 2001:db8:0:7::\/64:/);
  assert.equal(await check.run('data', msg({ clientAddress: '2001:db8:0:8::1' })), { action: 'next' });
});

test('local pickup is never limited; trusted clients only with exempt_trusted', async () => {
  const check = await make('per_ip = "1/1h"\n');
  for (let i = 0; i < 3; i++) assert.equal(await check.run('data', msg({ listener: 'pickup', clientAddress: '127.0.0.1', trusted: true })), { action: 'next' });
  assert.equal(await check.run('data', msg({ trusted: true })), { action: 'next' });
  assert.is((await check.run('data', msg({ trusted: true }))).action, 'tempfail', 'trusted clients count by default');
  const lax = await make('per_ip = "1/1h"\nexempt_trusted = true\n');
  for (let i = 0; i < 3; i++) assert.equal(await lax.run('data', msg({ trusted: true })), { action: 'next' });
});

test('bad options fail with file:line and the fix', async () => {
  const bad = async (options: string, re: RegExp, phases?: Parameters<typeof make>[1]) => {
    try {
      await make(options, phases);
      assert.unreachable(`accepted ${options}`);
    } catch (err) {
      assert.instance(err, ConfigError);
      assert.match((err as Error).message, re);
    }
  };
  await bad('per_ip = "lots"\n', /tidemail\.toml:2(?::\d+)?: 'checks\.ratelimit\.per_ip' is "lots", which is not COUNT\/DURATION\n  fix: write e\.g\. per_ip = "100\/1h"/);
  await bad('count = "messages"\n', /'checks\.ratelimit' sets no limit\n  fix: set at least one of per_ip/);
  await bad('per_ip = "10/1h"\n', /'checks\.ratelimit' is not listed at data.*\n  fix: add "ratelimit" to data/, { rcpt: ['relay', 'recipients', 'ratelimit'], data: [] });
  await bad('per_ip = "10/1h"\nper_domain = "5/1h"\n', /'checks\.ratelimit\.per_domain' is not a known setting/);
});

// End to end: per_ip = 2 messages per hour for untrusted clients on loopback.
const { front, session, transaction } = frontHelpers(test);
const LOCAL_USER = '[local]\ndomains = ["tidemail.test"]\n[local.users]\nme = "root"\n';
const MSG = 'From: <x@remote.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nhi\r\n';

test('e2e: the third message in an hour is refused at RCPT with 450 4.7.1; another client is served', async () => {
  const f = await front({
    trusted: ['192.0.2.0/24'],
    extraToml: `[checks]\nrcpt = ["ratelimit"]\ndata = ["syntax", "ratelimit"]\n[checks.ratelimit]\nper_ip = "2/1h"\n${LOCAL_USER}`,
    smtpToml: 'greet_delay = "0s"',
  });
  const c = await session(f.site.port);
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], MSG), /^250 /);
  // A message refused by an earlier data check (syntax: two From:) is not counted.
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], 'From: a@x.example\r\n' + MSG), /^554 5\.6\.0 /);
  assert.match(await transaction(c, 'x@remote.example', ['me@tidemail.test'], MSG), /^250 /);
  assert.match(await c.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Rate limit exceeded for client 127\.0\.0\.1: at most 2 messages per 1h; try again in \d+ seconds$/);
  const other = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  assert.match(await transaction(other, 'x@remote.example', ['me@tidemail.test'], MSG), /^250 /);
});

test.run();
