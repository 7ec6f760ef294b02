// spf-dkim-dmarc against real keys (made by `tidemail dkim keygen`), real signatures (made by the
// dkim-sign check) and real DNS answers from the local DNS responder: SPF by client address,
// DKIM pass and tamper, DMARC reject/quarantine, and strict alignment (adkim=s / aspf=s), which
// mailauth 4.13 gets wrong on its own. arc_seal: the ARC sets we add verify with mailauth's own
// ARC verifier (i=1, then i=2 on a second hop), and a failed chain is sealed once with cv=fail.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Check, CheckContext, HeaderField, Verdict } from '../../src/checks/check.js';
import { createCheck as createVerify } from '../../src/checks/spf-dkim-dmarc.js';
import { createCheck as createSign } from '../../src/checks/dkim-sign.js';
import { headerLines } from '../../src/smtp/receive.js';
import { loadConfig } from '../../src/config/load.js';
import { ConfigError } from '../../src/errors.js';
import { makeSite, runCli } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { cleanupTmp } from '../helpers/tmp.js';

const test = suite('spf-dkim-dmarc');

const GOOD_IP = '192.0.2.10';
const BAD_IP = '198.51.100.7';

let dns: DnsServer;
let signer: Check;
let keyDir: string;

/** `tidemail dkim keygen`, returning the TXT record it prints (its strings joined). */
async function keygen(domain: string, dir: string, extra: string[] = []): Promise<string> {
  const r = await runCli(['dkim', 'keygen', domain, '--out', dir, ...extra]);
  assert.is(r.code, 0, r.stderr);
  const line = /_domainkey\.\S+ IN TXT (.*)$/m.exec(r.stdout);
  assert.ok(line, r.stdout);
  return [...line[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
}

/** A check built from a real config file, the way the daemon builds it. */
async function build(create: typeof createVerify, name: string, optionsToml: string): Promise<Check> {
  const site = await makeSite(`[checks.${name}]\n${optionsToml}\n`);
  const config = loadConfig(site.configPath);
  return create({ config, options: config.checks.options(name), isLocal: () => false });
}

function verifier(extra = ''): Promise<Check> {
  return build(createVerify, 'spf-dkim-dmarc', `dns_servers = ["127.0.0.1:${dns.port}"]\n${extra}`);
}

let session = 0;
function ctx(over: Partial<CheckContext> & { raw?: string }): CheckContext {
  const { raw, ...rest } = over;
  const c: CheckContext = {
    phase: 'mail',
    sessionId: `s${++session}`,
    listener: 'mx',
    trusted: false,
    connection: {},
    transaction: {},
    clientAddress: GOOD_IP,
    helo: 'mail.example.org',
    sender: 'alice@example.org',
    recipients: ['bob@tidemail.test'],
    tls: false,
    ...rest,
  };
  if (raw !== undefined) {
    // As the receive path hands it over: our Received: on top, CRLF line ends.
    const full = `Received: from ${c.helo} ([${c.clientAddress}]) by tidemail.test with ESMTP id x1; Wed, 25 Nov 2026 21:00:00 +0000\r\n${raw.replace(/\r?\n/g, '\r\n')}`;
    const headerSection = full.slice(0, full.indexOf('\r\n\r\n') + 2);
    c.phase = 'data';
    c.headerSection = headerSection;
    c.headers = parseHeaders(headerSection);
    c.body = () => Readable.from([Buffer.from(full)]);
  }
  return c;
}

function parseHeaders(section: string): HeaderField[] {
  return section
    .replace(/\r\n(?=[ \t])/g, '')
    .split('\r\n')
    .filter(Boolean)
    .map((l) => ({ name: l.slice(0, l.indexOf(':')), value: l.slice(l.indexOf(':') + 1).trim() }));
}

function message(from: string, body = 'Hello Bob,\r\n\r\nthe meeting is at ten.\r\n'): string {
  return `From: Alice <${from}>\r\nTo: bob@tidemail.test\r\nSubject: meeting\r\nDate: Wed, 25 Nov 2026 20:59:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n${body}`;
}

/** Signs `raw` as the submitting side would and returns it with the DKIM-Signature on top. */
async function signed(raw: string, signWith = signer): Promise<string> {
  const v = await signWith.run('data', ctx({ raw, trusted: true }));
  assert.is(v.action, 'next');
  const h = v.action === 'next' ? v.addHeaders?.[0] : undefined;
  assert.ok(h && h.name === 'DKIM-Signature', 'no signature was added');
  // The submitting MTA's Received: is signed too; keep it, as a relay would.
  const sent = (await streamText(ctx({ raw, trusted: true }).body!())).toString();
  return `${h.name}: ${h.value}\r\n${sent}`;
}

async function streamText(s: NodeJS.ReadableStream): Promise<string> {
  let t = '';
  for await (const c of s) t += c.toString();
  return t;
}

function authResults(v: Verdict): string {
  assert.is(v.action, 'next', JSON.stringify(v));
  const h = v.action === 'next' ? v.addHeaders?.find((x) => x.name === 'Authentication-Results') : undefined;
  assert.ok(h, 'no Authentication-Results header');
  return h.value.replace(/\r\n\s+/g, ' ');
}

test.before(async () => {
  const site = await makeSite();
  keyDir = `${site.dir}/dkim`;
  const orgKey = await keygen('example.org', keyDir);
  const netKey = await keygen('example.net', keyDir);
  const comKey = await keygen('example.com', keyDir);
  // ARC sealing keys for two forwarding hops, with their own selectors.
  const fwdKey = await keygen('forwarder.example', keyDir, ['--selector', 'arc']);
  const relayKey = await keygen('relay.example', keyDir, ['--selector', 'arc2']);
  dns = await startDnsServer({
    'example.org': { TXT: [`v=spf1 ip4:${GOOD_IP} -all`] },
    'mail.example.org': { A: [GOOD_IP] },
    'tidemail._domainkey.example.org': { TXT: [orgKey] },
    '_dmarc.example.org': { TXT: ['v=DMARC1; p=reject'] },
    'example.com': { TXT: [`v=spf1 ip4:${GOOD_IP} -all`] },
    'tidemail._domainkey.example.com': { TXT: [comKey] },
    '_dmarc.example.com': { TXT: ['v=DMARC1; p=quarantine'] },
    // example.net: strict alignment, mail sent from the subdomain mail.example.net.
    'example.net': { TXT: ['v=spf1 -all'] },
    'mail.example.net': { TXT: [`v=spf1 ip4:${GOOD_IP} -all`] },
    'tidemail._domainkey.example.net': { TXT: [netKey] },
    '_dmarc.example.net': { TXT: ['v=DMARC1; p=reject; adkim=s; aspf=s'] },
    'broken.example': { servfail: true },
    'arc._domainkey.forwarder.example': { TXT: [fwdKey] },
    'arc2._domainkey.relay.example': { TXT: [relayKey] },
  });
  signer = await build(createSign, 'dkim-sign', `keys = { "example.org" = "${keyDir}/example.org.key", "example.net" = "${keyDir}/example.net.key", "example.com" = "${keyDir}/example.com.key" }`);
});

test.after(async () => {
  await dns?.close();
  cleanupTmp();
});

test('SPF pass and fail by client address, stored in the transaction notes at MAIL', async () => {
  const check = await verifier();
  const pass = ctx({});
  assert.equal(await check.run('mail', pass), { action: 'next' });
  assert.is(pass.transaction!.spf, 'pass');
  const fail = ctx({ clientAddress: BAD_IP });
  assert.equal(await check.run('mail', fail), { action: 'next' }); // spf_reject is off by default
  assert.is(fail.transaction!.spf, 'fail');
  const none = ctx({ sender: 'carol@nothing.example' });
  await check.run('mail', none);
  assert.is(none.transaction!.spf, 'none');
  const temp = ctx({ sender: 'dave@broken.example' });
  await check.run('mail', temp);
  assert.is(temp.transaction!.spf, 'temperror');
});

test('spf_reject = true refuses a hard SPF fail with 550 5.7.23, not a pass', async () => {
  const check = await verifier('spf_reject = true');
  const v = await check.run('mail', ctx({ clientAddress: BAD_IP }));
  assert.ok(v.action === 'reject' && v.code === 550 && v.enhanced === '5.7.23', JSON.stringify(v));
  assert.match(v.action === 'reject' ? v.text : '', /SPF check failed/);
  assert.equal(await check.run('mail', ctx({})), { action: 'next' });
});

test('a message signed by dkim-sign verifies: dkim=pass, spf=pass, dmarc=pass', async () => {
  const check = await verifier('dmarc_policy = "honour"');
  const raw = await signed(message('alice@example.org'));
  const c = ctx({ raw });
  await check.run('mail', c);
  const ar = authResults(await check.run('data', c));
  assert.ok(ar.startsWith('tidemail.test;'), ar);
  assert.ok(/dkim=pass [^;]*header\.i=@example\.org/.test(ar), ar);
  assert.match(ar, /spf=pass/);
  assert.match(ar, /dmarc=pass/);
  assert.is(c.transaction!.dkim, 'pass');
  assert.is(c.transaction!.dmarc, 'pass');
});

test('a tampered body fails DKIM; with SPF failing too, DMARC p=reject is honoured', async () => {
  const raw = (await signed(message('alice@example.org'))).replace('at ten', 'at eleven');
  const report = await verifier();
  const c = ctx({ raw, clientAddress: BAD_IP });
  const ar = authResults(await report.run('data', c));
  // mailauth says "neutral (body hash did not verify)" for a changed body, "fail" for a bad signature.
  assert.ok(/dkim=(fail|neutral)/.test(ar), ar);
  assert.match(ar, /spf=fail/);
  assert.match(ar, /dmarc=fail/);
  assert.ok(c.transaction!.dkim === 'fail' || c.transaction!.dkim === 'neutral', String(c.transaction!.dkim));

  const honour = await verifier('dmarc_policy = "honour"');
  const v = await honour.run('data', ctx({ raw, clientAddress: BAD_IP }));
  assert.equal(v, { action: 'reject', code: 550, enhanced: '5.7.1', text: 'DMARC policy of example.org says reject' });
  // SPF alone aligns, so the same tampered message from the right address still passes DMARC.
  assert.match(authResults(await honour.run('data', ctx({ raw }))), /dmarc=pass/);
});

test('a tampered header fails DKIM', async () => {
  const raw = (await signed(message('alice@example.org'))).replace('Subject: meeting', 'Subject: urgent payment');
  const c = ctx({ raw, clientAddress: BAD_IP });
  const ar = authResults(await (await verifier()).run('data', c));
  assert.ok(/dkim=fail/.test(ar), ar);
  assert.is(c.transaction!.dkim, 'fail');
});

test('DMARC p=quarantine with honour accepts and says so in the header', async () => {
  const raw = message('alice@example.com'); // unsigned, and from an address SPF does not allow
  const ar = authResults(await (await verifier('dmarc_policy = "honour"')).run('data', ctx({ raw, clientAddress: BAD_IP, sender: 'alice@example.com' })));
  assert.match(ar, /dmarc=fail[^;]*policy\.dmarc=quarantine/);
  assert.match(ar, /dkim=none/);
});

test('strict DKIM alignment (adkim=s): d=example.net does not align with From: mail.example.net', async () => {
  // dkim-sign uses the parent domain's key for a subdomain From:, which relaxed alignment allows.
  const raw = await signed(message('alice@mail.example.net'));
  assert.match(raw, /d=example\.net;/);
  const check = await verifier('dmarc_policy = "honour"');
  // Envelope from a domain with no SPF, so only DKIM could make DMARC pass.
  const c = ctx({ raw, sender: 'bounce@nothing.example' });
  const v = await check.run('data', c);
  assert.is(c.transaction!.dkim, 'pass');
  assert.equal(v, { action: 'reject', code: 550, enhanced: '5.7.1', text: 'DMARC policy of example.net says reject' });
});

test('strict DKIM alignment passes when d= is exactly the From: domain', async () => {
  const raw = await signed(message('alice@example.net'));
  const ar = authResults(await (await verifier('dmarc_policy = "honour"')).run('data', ctx({ raw, sender: 'bounce@nothing.example' })));
  assert.match(ar, /dkim=pass/);
  assert.match(ar, /dmarc=pass/);
});

test('strict SPF alignment (aspf=s): an SPF pass for mail.example.net does not align with From: example.net', async () => {
  const raw = message('alice@example.net'); // unsigned
  const check = await verifier('dmarc_policy = "honour"');
  const c = ctx({ raw, sender: 'bounce@mail.example.net', helo: 'mail.example.net' });
  const v = await check.run('data', c);
  assert.is(c.transaction!.spf, 'pass');
  assert.ok(v.action === 'reject' && /example\.net says reject/.test(v.text), JSON.stringify(v));
});

test('an ARC chain sealed by a forwarder is verified and reported; arc = false leaves it out', async () => {
  // example.com forwards alice@example.org's mail and seals it with its keygen-made key.
  const { sealMessage } = await import('mailauth/lib/arc/index.js');
  const fs = await import('node:fs');
  const raw = message('alice@example.org');
  const seal = await sealMessage(Buffer.from(raw), {
    signingDomain: 'example.com',
    selector: 'tidemail',
    privateKey: fs.readFileSync(`${keyDir}/example.com.key`),
    authResults: 'forwarder.example.com; spf=pass smtp.mailfrom=example.org',
    cv: 'none',
  } as Parameters<typeof sealMessage>[1]);
  const sealed = seal.toString() + raw;
  assert.match(sealed, /^ARC-Seal: /m);
  const c = ctx({ raw: sealed, clientAddress: BAD_IP });
  const ar = authResults(await (await verifier()).run('data', c));
  assert.ok(/\barc=pass/.test(ar), ar);
  assert.is(c.transaction!.arc, 'pass');
  const broken = ctx({ raw: sealed.replace('the meeting', 'no meeting'), clientAddress: BAD_IP });
  assert.ok(/\barc=fail/.test(authResults(await (await verifier()).run('data', broken))));
  assert.is(broken.transaction!.arc, 'fail');
  const off = ctx({ raw: sealed, clientAddress: BAD_IP });
  const offAr = authResults(await (await verifier('arc = false')).run('data', off));
  assert.ok(!/\barc=/.test(offAr), offAr);
});

test('trusted and authenticated clients are skipped unless check_trusted = true', async () => {
  const raw = message('alice@example.org');
  const check = await verifier('spf_reject = true');
  const trusted = ctx({ raw, trusted: true, clientAddress: BAD_IP });
  assert.equal(await check.run('mail', trusted), { action: 'next' });
  assert.equal(await check.run('data', trusted), { action: 'next' });
  assert.equal(trusted.transaction, {});
  assert.equal(trusted.connection, {});
  assert.equal(await check.run('mail', ctx({ authUser: 'alice', clientAddress: BAD_IP })), { action: 'next' });
  const strict = await verifier('spf_reject = true\ncheck_trusted = true');
  assert.is((await strict.run('mail', ctx({ trusted: true, clientAddress: BAD_IP }))).action, 'reject');
});

test('SPF runs at DATA too when the check is listed only under data', async () => {
  const c = ctx({ raw: message('alice@example.org'), clientAddress: BAD_IP });
  assert.match(authResults(await (await verifier()).run('data', c)), /spf=fail/);
  assert.is(c.transaction!.spf, 'fail');
});

/** The message as the receive path stores it: the added header fields on top of what arrived. */
function delivered(v: Verdict, c: CheckContext): Promise<string> {
  assert.is(v.action, 'next', JSON.stringify(v));
  const added = v.action === 'next' ? (v.addHeaders ?? []) : [];
  return streamText(c.body!()).then((arrived) => headerLines(added) + arrived);
}

/** mailauth's own ARC verification of a whole message, against the local DNS responder. */
async function verifyArc(raw: string): Promise<{ result: string; i: unknown; comment?: string; aar?: unknown }> {
  const [{ dkimVerify }, { arc }] = await Promise.all([import('mailauth/lib/dkim/verify.js'), import('mailauth/lib/arc/index.js')]);
  const { Resolver } = (await import('node:dns')).promises;
  const r = new Resolver();
  r.setServers([`127.0.0.1:${dns.port}`]);
  const resolver = (name: string, type: string) => r.resolve(name, type) as Promise<string[][] | string[]>;
  const dkim = await dkimVerify(Buffer.from(raw), { resolver });
  const res = await arc(dkim.arc as unknown as Parameters<typeof arc>[0], { resolver });
  return { result: res.status.result, i: res.i, comment: res.status.comment, aar: (res as { authenticationResults?: unknown }).authenticationResults };
}

function sealer(domain: string, selector: string): Promise<Check> {
  return verifier(`arc_seal = { domain = "${domain}", selector = "${selector}", key = "${keyDir}/${domain}.key" }`);
}

/** The tag=value pairs of an ARC header (whitespace unfolded). */
function tags(h: HeaderField | undefined): Record<string, string> {
  assert.ok(h, 'header missing');
  return Object.fromEntries(h.value.replace(/\s+/g, '').split(';').filter(Boolean).map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)]));
}

test('arc_seal: ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results on top (i=1, cv=none); mailauth says arc=pass', async () => {
  const raw = await signed(message('alice@example.org'));
  const c = ctx({ raw, clientAddress: BAD_IP }); // forwarded: SPF fails at the forwarder's next hop
  const v = await (await sealer('forwarder.example', 'arc')).run('data', c);
  assert.is(v.action, 'next');
  const added = v.action === 'next' ? (v.addHeaders ?? []) : [];
  assert.equal(added.map((h) => h.name), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Authentication-Results']);
  const as = tags(added[0]);
  assert.is(as.i, '1');
  assert.is(as.cv, 'none');
  assert.is(as.d, 'forwarder.example');
  assert.is(as.s, 'arc');
  const ams = tags(added[1]);
  assert.is(ams.i, '1');
  assert.match(ams.h!.toLowerCase(), /dkim-signature/); // the next hop can re-check the signature we saw
  // The AAR carries exactly our Authentication-Results.
  assert.is(added[2]!.value, `i=1; ${added[3]!.value}`);

  const out = await delivered(v, c);
  const arc = await verifyArc(out);
  assert.is(arc.result, 'pass', arc.comment);
  assert.is(arc.i, 1);
  assert.match(JSON.stringify(arc.aar), /"dkim":\[\{"result":"pass"/);
  // The seal covers the body: a changed copy does not verify.
  const changed = await verifyArc(out.replace('the meeting', 'no meeting'));
  assert.is(changed.result, 'fail');
});

test('arc_seal: a second hop seals on top as i=2, cv=pass, and the chain still verifies', async () => {
  const raw = await signed(message('alice@example.org'));
  const c1 = ctx({ raw, clientAddress: BAD_IP });
  const hop1 = await delivered(await (await sealer('forwarder.example', 'arc')).run('data', c1), c1);
  const c2 = ctx({ raw: hop1, clientAddress: BAD_IP, helo: 'mx.forwarder.example' });
  const v2 = await (await sealer('relay.example', 'arc2')).run('data', c2);
  assert.match(authResults(v2), /\barc=pass/);
  assert.is(c2.transaction!.arc, 'pass');
  const added = v2.action === 'next' ? (v2.addHeaders ?? []) : [];
  const as = tags(added.find((h) => h.name === 'ARC-Seal'));
  assert.is(as.i, '2');
  assert.is(as.cv, 'pass');
  assert.is(as.d, 'relay.example');
  const arc = await verifyArc(await delivered(v2, c2));
  assert.is(arc.result, 'pass', arc.comment);
  assert.is(arc.i, 2);
});

test('arc_seal: a broken chain is sealed once with cv=fail, then left alone', async () => {
  const c1 = ctx({ raw: message('alice@example.org') });
  const hop1 = await delivered(await (await sealer('forwarder.example', 'arc')).run('data', c1), c1);
  const broken = hop1.replace('the meeting', 'no meeting'); // changed after hop 1 sealed it
  const c2 = ctx({ raw: broken, clientAddress: BAD_IP });
  const v2 = await (await sealer('relay.example', 'arc2')).run('data', c2);
  assert.match(authResults(v2), /\barc=fail/);
  const as = tags((v2.action === 'next' ? v2.addHeaders ?? [] : []).find((h) => h.name === 'ARC-Seal'));
  assert.is(as.i, '2');
  assert.is(as.cv, 'fail');
  const hop2 = await delivered(v2, c2);
  assert.is((await verifyArc(hop2)).result, 'fail');
  // The newest seal says cv=fail: nothing more is added, only Authentication-Results.
  const c3 = ctx({ raw: hop2, clientAddress: BAD_IP });
  const v3 = await (await sealer('forwarder.example', 'arc')).run('data', c3);
  assert.equal(v3.action === 'next' ? v3.addHeaders?.map((h) => h.name) : v3, ['Authentication-Results']);
});

test('arc_seal: key relative to the config dir; a group-readable, Ed25519 or missing key is a config error at its line', async () => {
  const site = await makeSite();
  await keygen('forwarder.example', path.join(site.dir, 'dkim'));
  await keygen('ed.example', path.join(site.dir, 'dkim'), ['--type', 'ed25519']);
  const withSeal = async (opts: string) => {
    fs.appendFileSync(site.configPath, `\n[checks.spf-dkim-dmarc]\n${opts}\n`);
    const config = loadConfig(site.configPath);
    fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace(/\n\[checks\.spf-dkim-dmarc\][^]*$/, ''));
    return createVerify({ config, options: config.checks.options('spf-dkim-dmarc'), isLocal: () => false });
  };
  const line = (text: string) => fs.readFileSync(site.configPath, 'utf8').split('\n').length + text.split('\n').findIndex((l) => l.startsWith('arc_seal')) + 1;
  const good = 'arc_seal = { domain = "forwarder.example", selector = "arc", key = "dkim/forwarder.example.key" }';
  assert.is((await withSeal(good)).name, 'spf-dkim-dmarc');

  fs.chmodSync(path.join(site.dir, 'dkim', 'forwarder.example.key'), 0o640);
  for (const [opts, re] of [
    [good, /'checks\.spf-dkim-dmarc\.arc_seal\.key' key file \S+forwarder\.example\.key has mode 0640[^]*fix: chmod 600/],
    ['arc_seal = { domain = "ed.example", key = "dkim/ed.example.key" }', /arc_seal\.key' dkim\/ed\.example\.key is an Ed25519 key; ARC \(RFC 8617\) seals with RSA only/],
    ['arc_seal = { domain = "nokey.example", key = "dkim/nokey.example.key" }', /arc_seal\.key' key file \S+nokey\.example\.key does not exist/],
    ['arc_seal = { domain = "ed.example" }', /arc_seal\.key' is missing/],
    ['arc_seal = { domain = "ed.example", key = "dkim/ed.example.key", selctor = "x" }', /did you mean 'selector'/],
  ] as const) {
    try {
      await withSeal(opts);
      assert.unreachable(`accepted ${opts}`);
    } catch (err) {
      assert.instance(err, ConfigError);
      const msg = (err as Error).message;
      assert.match(msg, re);
      assert.ok(msg.includes(`tidemail.toml:${line(`[checks.spf-dkim-dmarc]\n${opts}`)}:`), `${msg}\n(expected line ${line(`\n${opts}`)})`);
    }
  }
  fs.chmodSync(path.join(site.dir, 'dkim', 'forwarder.example.key'), 0o600);
  try {
    await withSeal(`arc = false\n${good}`);
    assert.unreachable('accepted arc = false with arc_seal');
  } catch (err) {
    assert.match((err as Error).message, /tidemail\.toml:\d+:\d+: 'checks\.spf-dkim-dmarc\.arc' is false, but arc_seal is set/);
  }
});

test('bad options are config errors with file:line', async () => {
  for (const [opts, re] of [
    ['dmarc_policy = "strict"', /dmarc_policy.*not one of/],
    ['dns_servers = ["not an address"]', /dns_servers/],
    ['spf_rejct = true', /did you mean 'spf_reject'/],
  ] as const) {
    try {
      await build(createVerify, 'spf-dkim-dmarc', opts);
      assert.unreachable(`accepted ${opts}`);
    } catch (err) {
      assert.instance(err, ConfigError);
      assert.match((err as Error).message, /tidemail\.toml:\d+/);
      assert.match((err as Error).message, re);
    }
  }
});

test.run();
