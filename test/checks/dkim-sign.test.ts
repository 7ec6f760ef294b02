// dkim-sign with keys made by `tidemail dkim keygen`: what it signs (our users' mail, From:
// domains with a key), what it refuses at startup (readable or missing keys), and signatures
// that the spf-dkim-dmarc check verifies against the key records served by the local DNS responder.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Check, CheckContext, HeaderField, TransactionNotes, Verdict } from '../../src/checks/check.js';
import { createCheck as createSign, fromDomains } from '../../src/checks/dkim-sign.js';
import { createCheck as createVerify } from '../../src/checks/spf-dkim-dmarc.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { makeSite, runCli, type TestSite } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { cleanupTmp, writeFile } from '../helpers/tmp.js';

const test = suite('dkim-sign');

let dns: DnsServer;
let site: TestSite;

async function keygen(domain: string, extra: string[] = []): Promise<string> {
  const r = await runCli(['dkim', 'keygen', domain, '--config', site.configPath, ...extra]);
  assert.is(r.code, 0, r.stderr);
  const line = /_domainkey\.\S+ IN TXT (.*)$/m.exec(r.stdout);
  assert.ok(line, r.stdout);
  return [...line[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
}

/** Builds a check from `[checks.NAME]` options in a fresh config in the site's directory. */
async function build(create: typeof createSign, name: string, optionsToml: string): Promise<Check> {
  const file = path.join(site.dir, `${name}-${Math.random().toString(36).slice(2)}.toml`);
  writeFile(file, `hostname = "tidemail.test"\nstate_dir = "${site.stateDir}"\n[checks.${name}]\n${optionsToml}\n`);
  const config = loadConfig(file);
  return create({ config, options: config.checks.options(name), isLocal: () => false });
}

const signer = (opts = 'keys = { "example.org" = "dkim/example.org.key", "example.com" = "dkim/example.com.key" }') => build(createSign, 'dkim-sign', opts);
const verifier = () => build(createVerify, 'spf-dkim-dmarc', `dns_servers = ["127.0.0.1:${dns.port}"]\ndmarc_policy = "honour"`);

function ctx(raw: string, over: Partial<CheckContext> = {}): CheckContext {
  const full = `Received: from client ([127.0.0.1]) by tidemail.test with ESMTP id a1; Wed, 25 Nov 2026 21:00:00 +0000\r\n${raw}`;
  const section = full.slice(0, full.indexOf('\r\n\r\n') + 2);
  const headers: HeaderField[] = section
    .replace(/\r\n(?=[ \t])/g, '')
    .split('\r\n')
    .filter(Boolean)
    .map((l) => ({ name: l.slice(0, l.indexOf(':')), value: l.slice(l.indexOf(':') + 1).trim() }));
  return {
    phase: 'data',
    sessionId: 'x',
    listener: 'submission',
    trusted: false,
    connection: {},
    transaction: {},
    clientAddress: '127.0.0.1',
    helo: 'client',
    sender: 'alice@example.org',
    recipients: ['bob@elsewhere.example'],
    tls: false,
    headers,
    headerSection: section,
    body: () => Readable.from([Buffer.from(full)]),
    ...over,
  };
}

const msg = (from: string) =>
  `From: ${from}\r\nTo: bob@elsewhere.example\r\nSubject: hi\r\nDate: Wed, 25 Nov 2026 20:59:00 +0000\r\nMessage-ID: <k1@example.org>\r\n\r\nHello.\r\n`;

function signature(v: Verdict): HeaderField | undefined {
  return v.action === 'next' ? v.addHeaders?.find((h) => h.name === 'DKIM-Signature') : undefined;
}

/** The message as the next hop sees it: the signature prepended above our Received:. */
async function asSent(c: CheckContext, sig: HeaderField): Promise<string> {
  let body = '';
  for await (const chunk of c.body!()) body += chunk.toString();
  return `${sig.name}: ${sig.value}\r\n${body}`;
}

async function verify(raw: string): Promise<{ v: Verdict; notes: TransactionNotes }> {
  const c = ctx(raw, { trusted: false, listener: 'mx', clientAddress: '192.0.2.99', sender: 'alice@example.org', helo: 'out.example.org' });
  return { v: await (await verifier()).run('data', c), notes: c.transaction! };
}

test.before(async () => {
  site = await makeSite();
  const org = await keygen('example.org'); // default dir: <config dir>/dkim
  const com = await keygen('example.com', ['--type', 'ed25519']);
  dns = await startDnsServer({
    'tidemail._domainkey.example.org': { TXT: [org] },
    'tidemail._domainkey.example.com': { TXT: [com] },
    '_dmarc.example.org': { TXT: ['v=DMARC1; p=reject'] },
    '_dmarc.example.com': { TXT: ['v=DMARC1; p=reject'] },
  });
});

test.after(async () => {
  await dns?.close();
  cleanupTmp();
});

test('signs mail from an authenticated user with the From: domain key; it verifies (rsa-sha256)', async () => {
  const c = ctx(msg('Alice <alice@example.org>'), { authUser: 'alice' });
  const sig = signature(await (await signer()).run('data', c));
  assert.ok(sig, 'no DKIM-Signature');
  assert.match(sig.value, /a=rsa-sha256/);
  assert.match(sig.value, /d=example\.org/);
  assert.match(sig.value, /s=tidemail/);
  assert.match(sig.value, /h=[^;]*From/i);
  const { v, notes } = await verify(await asSent(c, sig));
  assert.is(notes.dkim, 'pass');
  assert.is(notes.dmarc, 'pass'); // SPF fails (no record), so DMARC passed on the signature alone
  assert.is(v.action, 'next');
});

test('a second boundary while signing does not break the signature (the flaky cron test, issue 15 §7)', async () => {
  // mailauth without signTime reads Date.now() once for the hashed t= and again for the written
  // one; in CI the two fell on both sides of a second now and then. Here every read is 1 s later
  // than the one before, so the old code fails every time.
  const c = ctx(msg('Alice <alice@example.org>'), { authUser: 'alice' });
  const check = await signer();
  const realNow = Date.now;
  let t = realNow();
  Date.now = () => (t += 1000);
  let v: Verdict;
  try {
    v = await check.run('data', c);
  } finally {
    Date.now = realNow;
  }
  const sig = signature(v);
  assert.ok(sig, 'no DKIM-Signature');
  const { notes } = await verify(await asSent(c, sig));
  assert.is(notes.dkim, 'pass', sig.value);
});

test('an Ed25519 key signs ed25519-sha256 and verifies', async () => {
  const c = ctx(msg('"Alice, at home" <alice@example.com>'), { trusted: true });
  const sig = signature(await (await signer()).run('data', c));
  assert.ok(sig);
  assert.match(sig.value, /a=ed25519-sha256/);
  const { notes } = await verify(await asSent(c, sig));
  assert.is(notes.dkim, 'pass');
});

test('a changed message no longer verifies', async () => {
  const c = ctx(msg('alice@example.org'), { trusted: true });
  const sig = signature(await (await signer()).run('data', c))!;
  const { v, notes } = await verify((await asSent(c, sig)).replace('Hello.', 'Send money.'));
  assert.is.not(notes.dkim, 'pass');
  assert.is(v.action, 'reject'); // p=reject, honoured
});

test('a subdomain From: is signed with the parent domain key', async () => {
  const sig = signature(await (await signer()).run('data', ctx(msg('alice@lists.example.org'), { trusted: true })));
  assert.ok(sig);
  assert.match(sig.value, /d=example\.org;/);
});

test('does not sign mail from untrusted clients, or from domains without a key', async () => {
  const s = await signer();
  assert.equal(await s.run('data', ctx(msg('alice@example.org'))), { action: 'next' });
  assert.equal(await s.run('data', ctx(msg('alice@example.net'), { trusted: true })), { action: 'next' });
  assert.equal(await s.run('data', ctx(msg('alice@notexample.org'), { trusted: true })), { action: 'next' });
});

test('the headers option decides what is signed', async () => {
  const s = await signer('keys = { "example.org" = "dkim/example.org.key" }\nheaders = ["From", "Subject"]\nselector = "s2026"');
  const sig = signature(await s.run('data', ctx(msg('alice@example.org'), { trusted: true })))!;
  const h = /h=([^;]*)/.exec(sig.value.replace(/\s+/g, ''))![1]!.toLowerCase().split(':');
  assert.equal(h.sort(), ['from', 'subject']);
  assert.match(sig.value, /s=s2026/);
});

test('refuses a key readable by group or others, with file:line and the fix', async () => {
  const key = path.join(site.dir, 'dkim', 'example.org.key');
  fs.chmodSync(key, 0o640);
  try {
    await signer();
    assert.unreachable('a 0640 key was accepted');
  } catch (err) {
    assert.instance(err, ConfigError);
    const m = (err as Error).message;
    assert.ok(/\.toml:\d+(?::\d+)?: 'checks\.dkim-sign\.keys\.example\.org'/.test(m), m);
    assert.match(m, /mode 0640/);
    assert.match(m, new RegExp(`fix: chmod 600 ${key.replace(/[.]/g, '\\.')}`));
  } finally {
    fs.chmodSync(key, 0o600);
  }
});

test('a missing key file or bad options are config errors that say what to do', async () => {
  const cases: [string, RegExp][] = [
    ['keys = { "example.net" = "dkim/example.net.key" }', /does not exist[\s\S]*tidemail dkim keygen example\.net/],
    ['keys = {}', /names no keys/],
    ['keys = { "example.org" = "dkim/example.org.key" }\nheaders = ["Subject"]', /does not include From/],
    ['keys = { "example.org" = "dkim/example.org.key" }\nselector = "bad selector"', /not a DNS label/],
    ['keys = { "example.org" = "dkim/example.org.key" }\nselectr = "x"', /did you mean 'selector'/],
  ];
  for (const [opts, re] of cases) {
    try {
      await signer(opts);
      assert.unreachable(`accepted: ${opts}`);
    } catch (err) {
      assert.instance(err, ConfigError);
      assert.match((err as Error).message, /\.toml:\d+:/);
      assert.match((err as Error).message, re);
    }
  }
});

test('fromDomains reads addresses, not display names or comments', () => {
  assert.equal(fromDomains('"bob@evil.example" <alice@Example.org>'), ['example.org']);
  assert.equal(fromDomains('alice@example.org (from bob@evil.example)'), ['example.org']);
  assert.equal(fromDomains('a@example.org, b@example.net'), ['example.org', 'example.net']);
});

test.run();
