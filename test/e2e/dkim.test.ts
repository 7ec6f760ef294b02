// End to end: a daemon with dkim-sign relays a message to a smarthost, signed; a second daemon
// with spf-dkim-dmarc receives that message and adds Authentication-Results saying it passed
// (and that a changed copy did not). Keys come from `tidemail dkim keygen`, DNS from the local
// DNS responder.

import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

const running: (RunningDaemon | Smarthost | DnsServer)[] = [];
const track = <T extends RunningDaemon | Smarthost | DnsServer>(x: T): T => (running.push(x), x);
test.after.each(async () => {
  for (const r of running.splice(0).reverse()) await ('stop' in r ? r.stop() : r.close());
});
test.after(() => cleanupTmp());

const MESSAGE =
  'From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: signed end to end\r\n' +
  'Date: Wed, 25 Nov 2026 22:00:00 +0000\r\nMessage-ID: <e2e-1@example.org>\r\n\r\nHello Bob.\r\n';

/** Sender side: a daemon that signs for `domain` and relays to a smarthost. */
async function signingSite(domain = 'example.org'): Promise<{ sh: Smarthost; record: string; port: number; configPath: string }> {
  const sh = track(await startSmarthost());
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const k = await runCli(['dkim', 'keygen', domain, '--config', site.configPath]);
  assert.is(k.code, 0, k.stderr);
  const line = /_domainkey\.\S+ IN TXT (.*)$/m.exec(k.stdout)!;
  const record = [...line[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
  // The config lines keygen printed, appended as printed.
  fs.appendFileSync(site.configPath, `\n${k.stdout.slice(k.stdout.indexOf('[checks]'))}`);
  const d = track(await startDaemon(site));
  return { sh, record, port: d.site.port, configPath: site.configPath };
}

/** Receiver side: a daemon with spf-dkim-dmarc (checking even loopback clients) and its own smarthost. */
async function verifyingSite(dnsPort: number, extra = ''): Promise<{ sh: Smarthost; port: number }> {
  const sh = track(await startSmarthost());
  const site = await makeSite(
    `[checks]\ndata = ["spf-dkim-dmarc"]\nmail = ["spf-dkim-dmarc"]\n[checks.spf-dkim-dmarc]\ncheck_trusted = true\ndns_servers = ["127.0.0.1:${dnsPort}"]\n${extra}\n`,
  );
  site.route('isp', smarthostRoute(sh.port));
  const d = track(await startDaemon(site));
  return { sh, port: d.site.port };
}

function authResults(raw: Buffer): string {
  const text = raw.toString();
  const m = /^Authentication-Results:((?:[^\r\n]*\r\n[ \t])*[^\r\n]*)\r\n/m.exec(text);
  assert.ok(m, `no Authentication-Results in:\n${text.slice(0, 2000)}`);
  return m[1]!.replace(/\r\n[ \t]+/g, ' ').trim();
}

test('dkim-sign signs on the way out; spf-dkim-dmarc on the receiving daemon says dkim=pass', async () => {
  const out = await signingSite();
  assert.match(await sendMessage(out.port, 'alice@example.org', ['bob@remote.example'], MESSAGE), /^250/);
  const [sent] = await out.sh.waitForMessages(1);
  const raw = sent!.raw.toString();
  assert.match(raw, /^DKIM-Signature: /, 'the signature is not the first header');
  assert.match(raw, /\bd=example\.org;/);

  const dns = track(await startDnsServer({
    'tidemail._domainkey.example.org': { TXT: [out.record] },
    'example.org': { TXT: ['v=spf1 ip4:192.0.2.1 -all'] }, // loopback is not allowed: DKIM must carry DMARC
    '_dmarc.example.org': { TXT: ['v=DMARC1; p=reject'] },
  }));
  const inbound = await verifyingSite(dns.port, 'dmarc_policy = "honour"');
  assert.match(await sendMessage(inbound.port, 'alice@example.org', ['bob@remote.example'], sent!.raw), /^250/);
  const [got] = await inbound.sh.waitForMessages(1);
  const ar = authResults(got!.raw);
  assert.ok(ar.startsWith('tidemail.test;'), ar);
  assert.ok(/dkim=pass [^;]*header\.i=@example\.org/.test(ar), ar);
  assert.match(ar, /spf=fail/);
  assert.match(ar, /dmarc=pass/);

  // The same message changed on the way: DKIM no longer passes, SPF fails, p=reject is honoured.
  const changed = Buffer.from(raw.replace('Hello Bob.', 'Hello Bob, pay this invoice.'));
  const reply = await sendMessage(inbound.port, 'alice@example.org', ['bob@remote.example'], changed);
  assert.match(reply, /^550 5\.7\.1 DMARC policy of example\.org says reject/);
  assert.is(inbound.sh.messages.length, 1);
});

test('mail a local user submits with sendmail (cron) is signed as well', async () => {
  const out = await signingSite();
  const r = await runCli(['-C', out.configPath, '-f', 'alice@example.org', 'bob@remote.example'], {
    argv0: 'sendmail',
    input: 'From: Cron Daemon <alice@example.org>\nSubject: cron output\n\nall good\n',
  });
  assert.is(r.code, 0, r.stderr);
  const [sent] = await out.sh.waitForMessages(1);
  const raw = sent!.raw.toString();
  assert.match(raw, /^DKIM-Signature: [^]*\bd=example\.org;/);
  await assertVerifies(sent!.raw, 'tidemail._domainkey.example.org', out.record);
});

/** An independent verifier (mailauth's, not our signing path) against the published record. */
async function assertVerifies(raw: Buffer, name: string, record: string): Promise<void> {
  const { dkimVerify } = await import('mailauth/lib/dkim/verify.js');
  const res = await dkimVerify(raw, {
    resolver: async (n: string, type: string) => {
      if (type === 'TXT' && n === name) return [[record]];
      throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    },
  });
  assert.is(res.results[0]?.status.result, 'pass', `${JSON.stringify(res.results[0]?.status)}\n${raw.toString()}`);
}

test("cron's own mail (From: root (Cron Daemon), no domain) leaves qualified and signed (issue 18)", async () => {
  // The host name is the domain bare local parts get, so its key signs them.
  const out = await signingSite('tidemail.test');
  const r = await runCli(['-C', out.configPath, '-FCronDaemon', '-i', '-B8BITMIME', '-oem', 'bob@remote.example'], {
    argv0: 'sendmail',
    input: 'From: root (Cron Daemon)\nTo: root\nCc: bob@remote.example, operator\nSubject: Cron <root@host> run-parts /etc/cron.daily\n\nall good\n',
  });
  assert.is(r.code, 0, r.stderr);
  const [sent] = await out.sh.waitForMessages(1);
  const raw = sent!.raw.toString();
  assert.match(raw, /^From: Cron Daemon <root@tidemail\.test>\r$/m);
  assert.match(raw, /^To: root@tidemail\.test\r$/m);
  assert.match(raw, /^Cc: bob@remote\.example, operator@tidemail\.test\r$/m);
  assert.match(raw, /^Subject: Cron <root@host> run-parts \/etc\/cron\.daily\r$/m, 'a non-address field was changed');
  assert.match(raw, /^DKIM-Signature: [^]*\bd=tidemail\.test;/);
  await assertVerifies(sent!.raw, 'tidemail._domainkey.tidemail.test', out.record);
});

test.run();
