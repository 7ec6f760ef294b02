// dnswl through createCheck with real TOML options against a real DNS server on loopback.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createCheck } from '../../src/checks/dnswl.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';

const test = suite('checks/dnswl');
let dns: DnsServer;
test.before(async () => {
  dns = await startDnsServer({});
});
test.after(() => dns.close());
test.before.each(() => {
  dns.zone = {};
  dns.queries.length = 0;
});

const make = (extra = '') =>
  buildCheck(createCheck, 'dnswl', `[checks.dnswl]\nzones = ["list.dnswl.example", "wl.example=3"]\nservers = ["127.0.0.1:${dns.port}"]\ntimeout = "500ms"\n${extra}`);

test('a listed client is noted for later checks; the verdict stays next without a threshold', async () => {
  dns.zone['7.100.51.198.list.dnswl.example'] = { A: ['127.0.10.2'] };
  const check = await make();
  const ctx = context('connect');
  assert.equal(await check.run('connect', ctx), { action: 'next' });
  assert.is(ctx.connection.dnswl, true);
  // Later phases of the same session reuse the answer.
  assert.equal(await check.run('rcpt', { ...ctx, phase: 'rcpt', recipient: 'bob@tidemail.test' }), { action: 'next' });
  assert.is(dns.queries.length, 2, 'one query per zone, once per session');

  const other = context('connect', { clientAddress: '198.51.100.8' });
  assert.equal(await check.run('connect', other), { action: 'next' });
  assert.is(other.connection.dnswl, undefined);
});

test('with a threshold, a client whose weights reach it is accepted', async () => {
  dns.zone['7.100.51.198.list.dnswl.example'] = { A: ['127.0.10.1'] };
  dns.zone['9.100.51.198.wl.example'] = { A: ['127.0.0.2'] };
  const check = await make('threshold = 3\n');
  const low = context('rcpt', { recipient: 'bob@tidemail.test' });
  assert.equal(await check.run('rcpt', low), { action: 'next' }, 'weight 1 < 3');
  assert.is(low.connection.dnswl, true);
  const high = context('rcpt', { clientAddress: '198.51.100.9', recipient: 'bob@tidemail.test' });
  assert.equal(await check.run('rcpt', high), { action: 'accept' });
});

test('a list answering "rate limited" (127.0.0.255) or failing does not list anyone', async () => {
  dns.zone['7.100.51.198.list.dnswl.example'] = { A: ['127.0.0.255'] };
  dns.zone['7.100.51.198.wl.example'] = { servfail: true };
  const check = await make('threshold = 1\n');
  const ctx = context('connect');
  assert.equal(await check.run('connect', ctx), { action: 'next' });
  assert.is(ctx.connection.dnswl, undefined);
});

// End to end with greylist behind it: the listed client (127.0.0.2) passes RCPT at once, the
// unlisted one (127.0.0.1) is greylisted. Neither is in trusted_networks.
const { front, session, transaction } = frontHelpers(test);
const LOCAL_USER = '[local]\ndomains = ["tidemail.test"]\n[local.users]\nme = "root"\n';
const MSG = 'From: <x@remote.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nhi\r\n';

test('e2e: a dnswl-listed client skips greylisting; an unlisted one gets 450', async () => {
  dns.zone['2.0.0.127.list.dnswl.example'] = { A: ['127.0.10.2'] };
  const f = await front({
    trusted: ['192.0.2.0/24'],
    extraToml: `[checks]\nconnect = ["dnswl"]\nrcpt = ["greylist"]\n[checks.dnswl]\nzones = ["list.dnswl.example"]\nservers = ["127.0.0.1:${dns.port}"]\n${LOCAL_USER}`,
    smtpToml: 'greet_delay = "0s"',
  });
  const listed = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  assert.match(await transaction(listed, 'x@remote.example', ['me@tidemail.test'], MSG), /^250 /);
  const other = await session(f.site.port);
  assert.match(await other.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
  assert.match(await other.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Greylisted, try again in 300 seconds$/);
});

test.run();
