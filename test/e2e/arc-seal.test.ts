// End to end: a forwarding daemon with `[checks.spf-dkim-dmarc] arc_seal` receives a message over
// SMTP and relays it to a smarthost; the copy that arrives carries the ARC set on top (ARC-Seal
// first, above Authentication-Results and Received:) and verifies with mailauth's ARC verifier.
// A second daemon sealing that copy again gives i=2, still passing. Keys come from
// `tidemail dkim keygen`, DNS from the local DNS responder.

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
  'From: Alice <alice@example.org>\r\nTo: list@forwarder.example\r\nSubject: sealed end to end\r\n' +
  'Date: Wed, 25 Nov 2026 22:00:00 +0000\r\nMessage-ID: <arc-e2e-1@example.org>\r\n\r\nHello list.\r\n';

/** A forwarding daemon that seals as `domain` (key made by keygen in its config dir) and relays to a smarthost. */
async function forwarder(domain: string, selector: string, dnsPort: number): Promise<{ sh: Smarthost; port: number; record: string }> {
  const sh = track(await startSmarthost());
  const site = await makeSite();
  const k = await runCli(['dkim', 'keygen', domain, '--selector', selector, '--config', site.configPath]);
  assert.is(k.code, 0, k.stderr);
  const line = new RegExp(`^${selector}\\._domainkey\\.${domain.replace(/\./g, '\\.')} IN TXT (.*)$`, 'm').exec(k.stdout)!;
  assert.ok(line, k.stdout);
  const record = [...line[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
  const fs = await import('node:fs');
  fs.appendFileSync(
    site.configPath,
    `\n[checks]\ndata = ["spf-dkim-dmarc"]\n[checks.spf-dkim-dmarc]\ncheck_trusted = true\ndns_servers = ["127.0.0.1:${dnsPort}"]\n` +
      `arc_seal = { domain = "${domain}", selector = "${selector}", key = "dkim/${domain}.key" }\n`,
  );
  site.route('isp', smarthostRoute(sh.port));
  const d = track(await startDaemon(site));
  return { sh, port: d.site.port, record };
}

async function verifyArc(raw: Buffer, dnsPort: number): Promise<{ result: string; i: unknown; comment?: string }> {
  const [{ dkimVerify }, { arc }] = await Promise.all([import('mailauth/lib/dkim/verify.js'), import('mailauth/lib/arc/index.js')]);
  const { Resolver } = (await import('node:dns')).promises;
  const r = new Resolver();
  r.setServers([`127.0.0.1:${dnsPort}`]);
  const resolver = (name: string, type: string) => r.resolve(name, type) as Promise<string[][] | string[]>;
  const dkim = await dkimVerify(raw, { resolver });
  const res = await arc(dkim.arc as unknown as Parameters<typeof arc>[0], { resolver });
  return { result: res.status.result, i: res.i, comment: res.status.comment };
}

/** The names of the header fields, top down, up to the first Received:. */
function topFields(raw: Buffer): string[] {
  const head = raw.toString().slice(0, raw.indexOf('\r\n\r\n'));
  const names = [...head.matchAll(/^([^\s:]+):/gm)].map((m) => m[1]!);
  return names.slice(0, names.indexOf('Received') + 1);
}

test('a forwarding daemon seals with ARC (i=1) and a second one on top (i=2); both copies verify', async () => {
  const dns = track(await startDnsServer({ 'example.org': { TXT: ['v=spf1 -all'] } }));
  const hop1 = await forwarder('forwarder.example', 'arc', dns.port);
  const hop2 = await forwarder('relay.example', 'arc2', dns.port);
  dns.zone['arc._domainkey.forwarder.example'] = { TXT: [hop1.record] };
  dns.zone['arc2._domainkey.relay.example'] = { TXT: [hop2.record] };

  assert.match(await sendMessage(hop1.port, 'alice@example.org', ['list@forwarder.example'], MESSAGE), /^250/);
  const [first] = await hop1.sh.waitForMessages(1);
  assert.equal(topFields(first!.raw), ['ARC-Seal', 'ARC-Message-Signature', 'ARC-Authentication-Results', 'Authentication-Results', 'Received']);
  assert.match(first!.raw.toString(), /^ARC-Seal: i=1; [^]*?cv=none/);
  const v1 = await verifyArc(first!.raw, dns.port);
  assert.is(v1.result, 'pass', v1.comment);
  assert.is(v1.i, 1);

  assert.match(await sendMessage(hop2.port, 'list@forwarder.example', ['bob@remote.example'], first!.raw), /^250/);
  const [second] = await hop2.sh.waitForMessages(1);
  assert.match(second!.raw.toString(), /^ARC-Seal: i=2; [^]*?cv=pass/);
  assert.match(second!.raw.toString(), /^Authentication-Results: tidemail\.test;[^]*?\barc=pass/m);
  const v2 = await verifyArc(second!.raw, dns.port);
  assert.is(v2.result, 'pass', v2.comment);
  assert.is(v2.i, 2);
  // The verification is real: the same copy with its body changed does not pass.
  const changed = await verifyArc(Buffer.from(second!.raw.toString().replace('Hello list.', 'Hello, pay this.')), dns.port);
  assert.is(changed.result, 'fail');
});

test.run();
