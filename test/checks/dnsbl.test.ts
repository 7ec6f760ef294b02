// dnsbl through createCheck with real TOML options, asking a real DNS server on loopback
// (test/helpers/dns-server.ts) over the wire.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Check, Verdict } from '../../src/checks/check.js';
import { createCheck, reversedName } from '../../src/checks/dnsbl.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { freePort, sleep } from '../helpers/ports.js';

const test = suite('checks/dnsbl');
let dns: DnsServer;
test.before(async () => {
  dns = await startDnsServer({});
});
test.after(() => dns.close());
test.before.each(() => {
  dns.zone = {};
  dns.queries.length = 0;
});

const toml = (zones: string[], extra = '') =>
  `[checks.dnsbl]\nzones = ${JSON.stringify(zones)}\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "500ms"\n${extra}`;
const text = (v: Verdict) => (v.action === 'reject' ? `${v.code} ${v.enhanced} ${v.text}` : v.action);
const make = (zones: string[], extra = ''): Promise<Check> => buildCheck(createCheck, 'dnsbl', toml(zones, extra));

test('query names: IPv4 reversed by octets, IPv6 by nibbles (RFC 5782 §2.1, §2.4)', () => {
  assert.is(reversedName('192.0.2.99', 'bl.example'), '99.2.0.192.bl.example');
  assert.is(reversedName('::ffff:192.0.2.99', 'bl.example'), '99.2.0.192.bl.example');
  assert.is(reversedName('2001:db8:1:2:3:4:567:89ab', 'ugly.example.com'), 'b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ugly.example.com');
  assert.is(reversedName('2001:db8::1', 'z'), '1.' + '0.'.repeat(23) + '8.b.d.0.1.0.0.2.z');
  assert.is(reversedName('not-an-ip', 'z'), null);
});

test('a listed client is refused at connect with 554 5.7.1 naming the zone; an unlisted one passes', async () => {
  dns.zone['7.100.51.198.bl.example'] = { A: ['127.0.0.2'] };
  const check = await make(['bl.example']);
  const v = await check.run('connect', context('connect'));
  assert.is(text(v), '554 5.7.1 Service unavailable; client [198.51.100.7] listed by bl.example');
  assert.equal(await check.run('connect', context('connect', { clientAddress: '198.51.100.8' })), { action: 'next' });
  assert.equal(dns.queries.map((q) => q.name), ['7.100.51.198.bl.example', '8.100.51.198.bl.example']);
  assert.ok(dns.queries.every((q) => q.type === 'A'));
});

test('IPv6 clients are looked up by nibbles and refused at rcpt', async () => {
  const client = '2001:db8:1:2::25';
  dns.zone[reversedName(client, 'bl.example')!] = { A: ['127.0.0.4'] };
  const check = await make(['bl.example']);
  const v = await check.run('rcpt', context('rcpt', { clientAddress: client, recipient: 'bob@tidemail.test' }));
  assert.is(text(v), `554 5.7.1 Service unavailable; client [${client}] listed by bl.example`);
  // postmaster and abuse stay reachable for a listed client (RFC 5321 §4.5.1).
  assert.equal(await check.run('rcpt', context('rcpt', { clientAddress: client, recipient: 'Postmaster@tidemail.test' })), { action: 'next' });
});

test('weights add up to the threshold across zones', async () => {
  const check = await make(['a.example', 'b.example=2'], 'threshold = 3\n');
  dns.zone['7.100.51.198.a.example'] = { A: ['127.0.0.2'] };
  assert.equal(await check.run('connect', context('connect')), { action: 'next' }, 'weight 1 < 3');
  dns.zone['9.100.51.198.a.example'] = { A: ['127.0.0.2'] };
  dns.zone['9.100.51.198.b.example'] = { A: ['127.0.0.3'] };
  const v = await check.run('connect', context('connect', { clientAddress: '198.51.100.9' }));
  assert.is(text(v), '554 5.7.1 Service unavailable; client [198.51.100.9] listed by a.example, b.example');
});

test('answers are cached for at least min_ttl, then asked again', async () => {
  dns.zone['7.100.51.198.bl.example'] = { A: ['127.0.0.2'] };
  const check = await make(['bl.example'], 'min_ttl = "400ms"\n');
  assert.is((await check.run('connect', context('connect'))).action, 'reject');
  assert.is((await check.run('connect', context('connect'))).action, 'reject');
  assert.is((await check.run('connect', context('connect', { clientAddress: '198.51.100.8' }))).action, 'next');
  assert.is((await check.run('connect', context('connect', { clientAddress: '198.51.100.8' }))).action, 'next');
  assert.is(dns.queries.length, 2, 'listed and not-listed answers both cached');
  delete dns.zone['7.100.51.198.bl.example'];
  assert.is((await check.run('connect', context('connect'))).action, 'reject', 'still the cached answer');
  await sleep(500);
  assert.is((await check.run('connect', context('connect'))).action, 'next', 'expired: asked again');
  assert.is(dns.queries.length, 3);
});

test('DNS failures never refuse: SERVFAIL, no server, a list refusing our resolver, non-127 answers', async () => {
  dns.zone['7.100.51.198.broken.example'] = { servfail: true };
  dns.zone['7.100.51.198.quota.example'] = { A: ['127.255.255.254'] };
  dns.zone['7.100.51.198.wild.example'] = { A: ['192.0.2.80'] };
  const check = await make(['broken.example', 'quota.example', 'wild.example']);
  assert.equal(await check.run('connect', context('connect')), { action: 'next' });
  // The refusal answer is not cached: asked again next time.
  await check.run('connect', context('connect'));
  assert.is(dns.queries.filter((q) => q.name.endsWith('quota.example')).length, 2);
  const deadPort = await freePort();
  const dead = await buildCheck(createCheck, 'dnsbl', `[checks.dnsbl]\nzones = ["bl.example"]\nservers = ["127.0.0.1:${deadPort}"]\ntimeout = "200ms"\n`);
  const start = Date.now();
  assert.equal(await dead.run('connect', context('connect')), { action: 'next' });
  assert.ok(Date.now() - start < 5000, `took ${Date.now() - start} ms`);
});

test('trusted and authenticated clients are not looked up', async () => {
  dns.zone['7.100.51.198.bl.example'] = { A: ['127.0.0.2'] };
  const check = await make(['bl.example']);
  assert.equal(await check.run('connect', context('connect', { trusted: true })), { action: 'next' });
  assert.equal(await check.run('rcpt', context('rcpt', { authUser: 'alice', recipient: 'x@example.net' })), { action: 'next' });
  assert.is(dns.queries.length, 0);
});

test('bad options fail with file:line and the fix', async () => {
  const bad = async (t: string, re: RegExp) => {
    try {
      await buildCheck(createCheck, 'dnsbl', t);
      assert.unreachable(`accepted ${t}`);
    } catch (err) {
      assert.instance(err, ConfigError);
      assert.match((err as Error).message, re);
    }
  };
  await bad('[checks.dnsbl]\nthreshold = 2\n', /tidemail\.toml:1(?::\d+)?: 'checks\.dnsbl\.zones' is empty or missing.*\n  fix: write e\.g\. zones = \["zen\.spamhaus\.org"\]/);
  await bad('[checks.dnsbl]\nzones = ["bl.example=heavy"]\n', /tidemail\.toml:2(?::\d+)?: 'checks\.dnsbl\.zones' has "bl\.example=heavy", which is not ZONE or ZONE=WEIGHT/);
  await bad('[checks.dnsbl]\nzones = ["bl.example"]\nservers = ["dns.example"]\n', /tidemail\.toml:3(?::\d+)?: 'checks\.dnsbl\.servers' has "dns\.example", which is not an IP address/);
  await bad('[checks.dnsbl]\nzones = ["bl.example"]\nthreshhold = 2\n', /'checks\.dnsbl\.threshhold' is not a known setting\n  fix: did you mean 'threshold'\?/);
});

// End to end: the daemon asks the loopback DNS server; 127.0.0.1 is listed, 127.0.0.2 is not,
// and neither is in trusted_networks.
const { front, connect, session, transaction } = frontHelpers(test);
const LOCAL_USER = '[local]\ndomains = ["tidemail.test"]\n[local.users]\nme = "root"\n';
const e2eSite = (phase: 'connect' | 'rcpt') =>
  front({
    trusted: ['192.0.2.0/24'],
    extraToml: `[checks]\n${phase} = ["dnsbl"]\n${toml(['bl.example'])}${LOCAL_USER}`,
    smtpToml: 'greet_delay = "0s"',
  });
const MSG = 'From: <x@remote.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nhi\r\n';

test('e2e: a listed client is refused in the greeting with 554 5.7.1; an unlisted one is served', async () => {
  dns.zone['1.0.0.127.bl.example'] = { A: ['127.0.0.2'] };
  const f = await e2eSite('connect');
  const listed = await connect(f.site.port);
  assert.is(await listed.reply(), '554 5.7.1 Service unavailable; client [127.0.0.1] listed by bl.example');
  const ok = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  assert.match(await transaction(ok, 'x@remote.example', ['me@tidemail.test'], MSG), /^250 /);
  assert.ok(dns.queries.some((q) => q.name === '2.0.0.127.bl.example'), JSON.stringify(dns.queries));
});

test('e2e: listed at rcpt: each RCPT gets 554 5.7.1', async () => {
  dns.zone['1.0.0.127.bl.example'] = { A: ['127.0.0.2'] };
  const f = await e2eSite('rcpt');
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
  assert.is(await c.cmd('RCPT TO:<me@tidemail.test>'), '554 5.7.1 Service unavailable; client [127.0.0.1] listed by bl.example');
  await f.d.waitForLog(/refused by check check=dnsbl phase=rcpt client=127\.0\.0\.1/);
});

test.run();
