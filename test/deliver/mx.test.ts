// Direct MX delivery (src/deliver/mx.ts, mx-dns.ts, mx-sts.ts) through the real daemon: a DNS
// stand-in on UDP loopback answers for made-up domains, smtp-server sinks on 127.0.0.2-6 and ::1
// play the MX hosts (all on one port, as real MX hosts all listen on 25), and an HTTPS server on
// 127.0.0.1 serves MTA-STS policies. Nothing leaves the machine.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { SMTPServer } from 'smtp-server';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseStsPolicy, stsMatches, stsRecordId } from '../../src/deliver/mx-sts.js';
import { mailqWhen, makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer, type DnsZone } from '../helpers/dns-server.js';
import { freePort, sleep, waitFor } from '../helpers/ports.js';
import { startSmarthost, type ReceivedMessage, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

/** MX hosts by role; each listens on its own loopback address, all on `port`. */
interface Sinks {
  /** 127.0.0.2: first choice for most domains, and the sender's MX (bounces land here). */
  primary: Smarthost;
  /** 127.0.0.3: backup MX, implicit-MX target, address-literal target. */
  backup: Smarthost;
  /** 127.0.0.4: offers STARTTLS with a certificate from a CA nobody trusts. */
  starttls: Smarthost;
  /** 127.0.0.5: offers STARTTLS but cannot complete a TLS ≥ 1.2 handshake. */
  oldTls: Smarthost;
  /** 127.0.0.6: the MTA-STS domain's real MX, certificate valid for mx.sts.example. */
  sts: Smarthost;
  /** ::1, when the machine has IPv6 loopback. */
  v6: Smarthost | null;
}

interface Ctx {
  dns: DnsServer;
  port: number;
  sinks: Sinks;
  policyServer: https.Server;
  policyFetches: string[];
  site: TestSite;
  daemon: RunningDaemon;
}

const SENDER = 'alice@senders.example';
const DEAD = '127.0.0.9'; // nothing listens here: connections are refused

const zone: DnsZone = {
  'senders.example': { MX: [[10, 'mx.senders.example']] },
  'mx.senders.example': { A: ['127.0.0.2'] },
  'pref.example': { MX: [[20, 'mx2.pref.example'], [10, 'mx1.pref.example']] },
  'mx1.pref.example': { A: ['127.0.0.2'] },
  'mx2.pref.example': { A: ['127.0.0.3'] },
  'fallback.example': { MX: [[10, 'live.fallback.example'], [5, 'dead.fallback.example']] },
  'dead.fallback.example': { A: [DEAD] },
  'live.fallback.example': { A: ['127.0.0.3'] },
  'implicit.example': { A: ['127.0.0.3'] },
  'v6.example': { MX: [[10, 'mx.v6.example']] },
  'mx.v6.example': { AAAA: ['::1'] },
  'nullmx.example': { MX: [[0, '.']] },
  'broken.example': { servfail: true },
  'tls.example': { MX: [[10, 'mx.tls.example']] },
  'mx.tls.example': { A: ['127.0.0.4'] },
  'oldtls.example': { MX: [[10, 'mx.oldtls.example']] },
  'mx.oldtls.example': { A: ['127.0.0.5'] },
  // MTA-STS enforce; the more preferred MX is not in the policy (think: a forged MX answer).
  'sts.example': { MX: [[5, 'rogue.sts.example'], [10, 'mx.sts.example']] },
  'rogue.sts.example': { A: ['127.0.0.2'] },
  'mx.sts.example': { A: ['127.0.0.6'] },
  '_mta-sts.sts.example': { TXT: ['v=STSv1; id=20250101T000000;'] },
  'mta-sts.sts.example': { A: ['127.0.0.1'] },
  // MTA-STS enforce, but the MX's certificate (from a trusted CA) is for another name.
  'stsbad.example': { MX: [[10, 'mx.stsbad.example']] },
  'mx.stsbad.example': { A: ['127.0.0.6'] },
  '_mta-sts.stsbad.example': { TXT: ['v=STSv1; id=1'] },
  'mta-sts.stsbad.example': { A: ['127.0.0.1'] },
};

const policies: Record<string, string> = {
  'mta-sts.sts.example': 'version: STSv1\r\nmode: enforce\r\nmx: mx.sts.example\r\nmx: *.backup.sts.example\r\nmax_age: 86400\r\n',
  'mta-sts.stsbad.example': 'version: STSv1\nmode: enforce\nmx: mx.stsbad.example\nmax_age: 86400\n',
};

/** A CA of our own, and one certificate for the MTA-STS MX and policy hosts. */
function stsCerts(): { caFile: string; key: Buffer; cert: Buffer } {
  const d = tmpDir('tidemail-sts-certs-');
  const f = (n: string) => path.join(d, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '2', '-subj', '/CN=tidemail MTA-STS test CA');
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=mx.sts.example');
  fs.writeFileSync(f('ext.cnf'), 'subjectAltName=DNS:mx.sts.example,DNS:mta-sts.sts.example,DNS:mta-sts.stsbad.example\n');
  ssl('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('server.pem'), '-days', '2', '-extfile', f('ext.cnf'));
  fs.chmodSync(f('ca.pem'), 0o644);
  return { caFile: f('ca.pem'), key: fs.readFileSync(f('server.key')), cert: fs.readFileSync(f('server.pem')) };
}

/** An MX with TLS settings of our choosing (startSmarthost only knows the shared test certs). */
async function startTlsSink(host: string, port: number, tls: { key: Buffer; cert: Buffer; maxVersion?: 'TLSv1.1' }): Promise<Smarthost> {
  const messages: ReceivedMessage[] = [];
  const server = new SMTPServer({
    logger: false,
    key: tls.key,
    cert: tls.cert,
    minVersion: 'TLSv1',
    maxVersion: tls.maxVersion,
    authOptional: true,
    disabledCommands: ['AUTH'],
    disableReverseLookup: true,
    onData: (stream, session, cb) => {
      const parts: Buffer[] = [];
      stream.on('data', (d: Buffer) => parts.push(d));
      stream.on('end', () => {
        messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((x) => x.address),
          raw: Buffer.concat(parts),
          secure: session.secure,
        });
        cb();
      });
    },
  });
  server.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port,
    messages,
    connections: 0,
    greeted: 0,
    closed: 0,
    waitForMessages: (n, timeoutMs = 10_000) => waitFor(`${n} message(s)`, () => (messages.length >= n ? messages : null), timeoutMs),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

const ipv6Loopback = await new Promise<boolean>((resolve) => {
  const s = net.createServer();
  s.once('error', () => resolve(false));
  s.listen(0, '::1', () => s.close(() => resolve(true)));
});

/** All MX sinks on one port; another port if that one is taken on some loopback address. */
async function startSinks(certs: { key: Buffer; cert: Buffer }): Promise<{ port: number; sinks: Sinks }> {
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const started: Smarthost[] = [];
    const keep = async <T extends Smarthost | null>(p: Promise<T>): Promise<T> => {
      const s = await p;
      if (s) started.push(s);
      return s;
    };
    try {
      const sinks: Sinks = {
        primary: await keep(startSmarthost({ host: '127.0.0.2', port })),
        backup: await keep(startSmarthost({ host: '127.0.0.3', port })),
        starttls: await keep(startSmarthost({ host: '127.0.0.4', port, tls: 'starttls' })),
        oldTls: await keep(startTlsSink('127.0.0.5', port, { ...certs, maxVersion: 'TLSv1.1' })),
        sts: await keep(startTlsSink('127.0.0.6', port, certs)),
        v6: ipv6Loopback ? await keep(startSmarthost({ host: '::1', port })) : null,
      };
      return { port, sinks };
    } catch (err) {
      await Promise.all(started.map((s) => s.close()));
      if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 5) throw err;
    }
  }
}

const mx = suite<Ctx>('direct MX delivery', {} as Ctx);

mx.before(async (ctx) => {
  const certs = stsCerts();
  const { port, sinks } = await startSinks(certs);
  ctx.port = port;
  ctx.sinks = sinks;
  ctx.policyFetches = [];
  ctx.policyServer = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    ctx.policyFetches.push(host);
    const policy = policies[host];
    if (req.url !== '/.well-known/mta-sts.txt' || !policy) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' }).end(policy);
  });
  const httpsPort = await new Promise<number>((resolve) => ctx.policyServer.listen(0, '127.0.0.1', () => resolve((ctx.policyServer.address() as net.AddressInfo).port)));
  ctx.dns = await startDnsServer(zone);
  ctx.site = await makeSite('[queue]\nretry_min = "1h"');
  // One message per connection, so every delivery looks its domain up again (the cache test).
  ctx.site.route('direct', `kind = "mx"\nport = ${port}\ndns_servers = ["127.0.0.1:${ctx.dns.port}"]\ntls_ca_file = "${certs.caFile}"\nmessages_per_connection = 1\n`);
  ctx.daemon = await startDaemon(ctx.site, { TIDEMAIL_MTA_STS_PORT: String(httpsPort) });
});

mx.after(async (ctx) => {
  // MX_TEST_LOGS=1 node dist/test/deliver/mx.test.js shows what the daemon did.
  if (process.env['MX_TEST_LOGS']) console.log(ctx.daemon?.logs());
  await ctx.daemon?.stop();
  await Promise.all(Object.values(ctx.sinks ?? {}).map((s: Smarthost | null) => s?.close()));
  ctx.policyServer?.close();
  await ctx.dns?.close();
  cleanupTmp();
});

let seq = 0;
/** A fresh local part per message, so tests sharing sinks never see each other's mail. */
const rcpt = (domain: string) => `u${++seq}-${process.pid}@${domain}`;

async function send(ctx: Ctx, to: string[], subject = 'mx test'): Promise<void> {
  const reply = await sendMessage(ctx.site.port, SENDER, to, `Subject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@x>\r\n\r\nhello\r\n`);
  assert.match(reply, /^250 /);
}

function arrival(sink: Smarthost, to: string, from?: string): Promise<ReceivedMessage> {
  return waitFor(`mail for ${to} at port ${sink.port}`, () => sink.messages.find((m) => m.to.includes(to) && (from === undefined || m.from === from)));
}

/** The DSN for `failed` that came back to SENDER through its MX. */
async function bounceFor(ctx: Ctx, failed: string): Promise<string> {
  const dsn = await waitFor(`bounce for ${failed}`, () =>
    ctx.sinks.primary.messages.find((m) => m.from === '' && m.to.includes(SENDER) && m.raw.toString().includes(`Final-Recipient: rfc822; ${failed}`)));
  return dsn.raw.toString();
}

function nowhereElse(ctx: Ctx, to: string, except: Smarthost | null): void {
  for (const [name, s] of Object.entries(ctx.sinks) as [string, Smarthost | null][]) {
    if (!s || s === except) continue;
    assert.not.ok(s.messages.some((m) => m.to.includes(to)), `${to} also arrived at the ${name} sink`);
  }
}

mx('delivers to the MX with the lowest preference value', async (ctx) => {
  const to = rcpt('pref.example');
  await send(ctx, [to]);
  const m = await arrival(ctx.sinks.primary, to);
  assert.equal(m.from, SENDER);
  await ctx.daemon.waitForLog(new RegExp(`delivered to=<${to}> route=direct relay=127\\.0\\.0\\.2`));
  nowhereElse(ctx, to, ctx.sinks.primary);
});

mx('falls back to the next MX when the first refuses connections', async (ctx) => {
  const to = rcpt('fallback.example');
  await send(ctx, [to]);
  await arrival(ctx.sinks.backup, to);
  assert.match(ctx.daemon.logs(), /next hop unreachable .*dead\.fallback\.example\[127\.0\.0\.9\]/);
});

mx('without MX records the domain itself is the mail server (implicit MX, A only)', async (ctx) => {
  const to = rcpt('implicit.example');
  await send(ctx, [to]);
  await arrival(ctx.sinks.backup, to);
  assert.ok(ctx.dns.queries.some((q) => q.name === 'implicit.example' && q.type === 'MX'));
});

mx('IPv6: an MX with only an AAAA record is reached at ::1', async (ctx) => {
  if (!ctx.sinks.v6) {
    console.log('  (skipped: no IPv6 loopback on this machine)');
    return;
  }
  const to = rcpt('v6.example');
  await send(ctx, [to]);
  await arrival(ctx.sinks.v6, to);
  await ctx.daemon.waitForLog(new RegExp(`delivered to=<${to}> route=direct relay=::1`));
});

mx('an address literal user@[127.0.0.3] goes to that address without DNS', async (ctx) => {
  const to = `lit${process.pid}@[127.0.0.3]`;
  const before = ctx.dns.queries.length;
  await send(ctx, [to]);
  await arrival(ctx.sinks.backup, to);
  assert.not.ok(ctx.dns.queries.slice(before).some((q) => q.name.includes('127.0.0.3')));
});

mx('one message to two domains is delivered to each domain\'s own MX', async (ctx) => {
  const a = rcpt('pref.example');
  const b = rcpt('implicit.example');
  await send(ctx, [a, b]);
  const ma = await arrival(ctx.sinks.primary, a);
  const mb = await arrival(ctx.sinks.backup, b);
  assert.equal(ma.to, [a]);
  assert.equal(mb.to, [b]);
});

mx('null MX ("0 .") bounces at once with 5.1.10; the DSN reaches the sender through its MX', async (ctx) => {
  const to = rcpt('nullmx.example');
  await send(ctx, [to]);
  const dsn = await bounceFor(ctx, to);
  assert.match(dsn, /Action: failed\r\nStatus: 5\.1\.10/);
  assert.match(dsn, /does not accept mail \(null MX\)/);
});

mx('NXDOMAIN bounces with 5.1.2', async (ctx) => {
  const to = rcpt('nosuch.example');
  await send(ctx, [to]);
  const dsn = await bounceFor(ctx, to);
  assert.match(dsn, /Action: failed\r\nStatus: 5\.1\.2/);
  assert.match(dsn, /nosuch\.example does not exist/);
});

mx('SERVFAIL defers and never bounces; mailq shows the DNS error', async (ctx) => {
  const to = rcpt('broken.example');
  await send(ctx, [to]);
  await ctx.daemon.waitForLog(new RegExp(`deferred to=<${to}>.*ESERVFAIL`));
  const q = await mailqWhen(ctx.site.configPath, 'the DNS error', (out) => /\(4\.4\.3 MX lookup for broken\.example failed: ESERVFAIL\)/.test(out));
  assert.ok(q.includes(to), q);
  await sleep(300);
  assert.not.match(ctx.daemon.logs(), new RegExp(`bounced to=<${to}>`));
});

mx('opportunistic STARTTLS: encrypted when offered, even with a certificate from an unknown CA', async (ctx) => {
  const to = rcpt('tls.example');
  await send(ctx, [to]);
  const m = await arrival(ctx.sinks.starttls, to);
  assert.ok(m.secure, 'message did not travel over TLS');
});

mx('a failed opportunistic TLS handshake is retried in plaintext on the same MX', async (ctx) => {
  const to = rcpt('oldtls.example');
  await send(ctx, [to]);
  const m = await arrival(ctx.sinks.oldTls, to);
  assert.not.ok(m.secure);
  assert.match(ctx.daemon.logs(), /STARTTLS failed, retrying without TLS .*hop=mx\.oldtls\.example\[127\.0\.0\.5\]/);
});

mx('MTA-STS enforce: only MX hosts in the policy, over verified TLS; the policy is cached', async (ctx) => {
  const to = rcpt('sts.example');
  await send(ctx, [to]);
  const m = await arrival(ctx.sinks.sts, to);
  assert.ok(m.secure, 'message did not travel over TLS');
  nowhereElse(ctx, to, ctx.sinks.sts);
  assert.match(ctx.daemon.logs(), /mta-sts policy domain=sts\.example id=20250101T000000 mode=enforce/);
  assert.match(ctx.daemon.logs(), /mx not in mta-sts policy domain=sts\.example mode=enforce mx=rogue\.sts\.example/);
  const to2 = rcpt('sts.example');
  await send(ctx, [to2]);
  await arrival(ctx.sinks.sts, to2);
  assert.is(ctx.daemon.logs().match(/mx not in mta-sts policy domain=sts\.example/g)?.length, 2, 'second delivery did not look the policy up');
  assert.equal(ctx.policyFetches.filter((h) => h === 'mta-sts.sts.example').length, 1, 'policy fetched again despite max_age');
});

mx('MTA-STS enforce: a certificate not valid for the MX name defers; no plaintext fallback', async (ctx) => {
  const to = rcpt('stsbad.example');
  await send(ctx, [to]);
  await ctx.daemon.waitForLog(new RegExp(`deferred to=<${to}>.*TLS to mx\\.stsbad\\.example\\[127\\.0\\.0\\.6\\]:\\d+ failed: Hostname/IP does not match`));
  assert.ok(ctx.policyFetches.includes('mta-sts.stsbad.example'));
  nowhereElse(ctx, to, null);
});

mx('MTA-STS parsing: record ids, policy fields and MX patterns (RFC 8461)', () => {
  assert.is(stsRecordId([['v=STSv1; id=20160831085700Z;']]), '20160831085700Z');
  assert.is(stsRecordId([['v=STSv1; ', 'id=abc']]), 'abc');
  assert.is(stsRecordId([['v=STSv1; id=a'], ['v=STSv1; id=b']]), null, 'two records mean no policy');
  assert.is(stsRecordId([['v=spf1 -all']]), null);
  const p = parseStsPolicy('version: STSv1\nmode: testing\nmx: MX1.Example.NET.\nmx: *.example.org\nmax_age: 9999999999\n', 'x');
  assert.equal(p, { id: 'x', mode: 'testing', mx: ['mx1.example.net', '*.example.org'], maxAgeS: 31_557_600 });
  assert.throws(() => parseStsPolicy('version: STSv1\nmode: enforce\nmax_age: 10\n', 'x'), /no mx/);
  assert.throws(() => parseStsPolicy('version: STSv2\nmode: enforce\nmx: a\nmax_age: 10\n', 'x'), /version/);
  assert.ok(stsMatches('*.example.org', 'mx.example.org'));
  assert.not.ok(stsMatches('*.example.org', 'a.b.example.org'), 'a wildcard covers one label only');
  assert.not.ok(stsMatches('*.example.org', 'example.org'));
  assert.ok(stsMatches('mx1.example.net', 'MX1.example.net.'));
});

mx.run();
