// [relay] domains (backup MX, a LAN domain behind us) through the real daemon on loopback, with
// loopback untrusted (trusted_networks is a documentation range): a DNS stand-in answers the MX
// records, smtp-server sinks play the primary MX (127.0.0.2) and a named next hop (127.0.0.3).
// Accepted from anyone for a relay domain, refused for others (still a closed relay), unknown
// recipients refused when a list is set, delivered to the better MX only — queued while it is
// down — and never to ourselves, by name or by address.

import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { RawSmtp, sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

interface Ctx {
  dns: DnsServer;
  list: string;
  /** The port every MX listens on, and our second listener (127.0.0.7) too. */
  mxPort: number;
  primary: Smarthost | null;
  lan: Smarthost;
  site: TestSite;
  daemon: RunningDaemon;
}

const body = (to: string) => `From: <outside@sender.example>\r\nTo: <${to}>\r\nDate: Thu, 03 Dec 2026 07:00:00 +0000\r\nMessage-ID: <${to.replace('@', '.')}@sender.example>\r\nSubject: relay test\r\n\r\nhello\r\n`;

const t = suite<Ctx>('relay domains', {} as Ctx);

t.before(async (ctx) => {
  ctx.dns = await startDnsServer({
    // We are the backup (20); mx1 is the primary.
    'family.example': { MX: [[20, 'tidemail.test'], [10, 'mx1.family.example']] },
    'mx1.family.example': { A: ['127.0.0.2'] },
    'tidemail.test': { A: ['127.0.0.1'] },
    // We are the best MX: a loop by name.
    'loop.example': { MX: [[10, 'tidemail.test'], [20, 'mx1.family.example']] },
    // An MX under another name whose address and port are ours: a loop by address.
    'sneaky.example': { MX: [[10, 'mx.sneaky.example']] },
    'mx.sneaky.example': { A: ['127.0.0.7'] },
  });
  ctx.mxPort = await freePort('127.0.0.2');
  ctx.primary = null; // down at first
  ctx.lan = await startSmarthost({ host: '127.0.0.3' });
  const dir = tmpDir();
  const list = ctx.list = writeFile(path.join(dir, 'relay-recipients'), '# who the primary knows\nalice@family.example\nbob@family.example  OK\n@loop.example\n@sneaky.example\n@lan.example\n@self.example\n');
  const port = await freePort();
  ctx.site = await makeSite(`[local]\ndomains = ["tidemail.test"]\n[queue]\nretry_min = "1s"\nretry_max = "2s"\n[relay]\ndomains = ["family.example", "loop.example", "sneaky.example"]\nrecipients = "${list}"\n[relay.next_hop]\n"lan.example" = "127.0.0.3:${ctx.lan.port}"\n"self.example" = "127.0.0.1:${port}"\n`, { port, smtpToml: 'greet_delay = "0s"' });
  const toml = fs.readFileSync(ctx.site.configPath, 'utf8')
    .replace(/^listen = .*$/m, `listen = ["127.0.0.1:${port}", "127.0.0.7:${ctx.mxPort}"]`)
    .replace(/^trusted_networks = .*$/m, 'trusted_networks = ["192.0.2.0/24"]');
  fs.writeFileSync(ctx.site.configPath, toml);
  ctx.site.route('direct', `kind = "mx"\nport = ${ctx.mxPort}\ndns_servers = ["127.0.0.1:${ctx.dns.port}"]\n`);
  ctx.daemon = await startDaemon(ctx.site);
});

t.after(async (ctx) => {
  if (process.env['RELAY_TEST_LOGS']) console.log(ctx.daemon?.logs());
  await ctx.daemon?.stop();
  await ctx.primary?.close();
  await ctx.lan?.close();
  await ctx.dns?.close();
  cleanupTmp();
});

t('an untrusted client: relay domain accepted, listed recipients only, everything else still refused', async (ctx) => {
  const c = await RawSmtp.connect(ctx.site.port);
  try {
    await c.hello('outside.example');
    assert.match(await c.cmd('MAIL FROM:<outside@sender.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<alice@family.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<Bob@Family.Example>'), /^250/, 'case does not matter');
    assert.match(await c.cmd('RCPT TO:<carol@family.example>'), /^550 5\.1\.1 .*relay recipient table/);
    // Still a closed relay for every other domain, and for routing tricks through the relay domain.
    assert.match(await c.cmd('RCPT TO:<victim@victim.example>'), /^554 5\.7\.1 .*Relay access denied/);
    assert.match(await c.cmd('RCPT TO:<victim%victim.example@family.example>'), /^554 5\.7\.1/);
    assert.match(await c.cmd('RCPT TO:<victim.example!victim@family.example>'), /^554 5\.7\.1/);
    assert.match(await c.cmd('RCPT TO:<x@sub.family.example>'), /^554 5\.7\.1/, 'a subdomain is not the domain');
  } finally {
    c.close();
  }
});

t('an edited recipients list applies to the next RCPT, without a reload', async (ctx) => {
  const rcpt = async () => {
    const c = await RawSmtp.connect(ctx.site.port);
    try {
      await c.hello('outside.example');
      await c.cmd('MAIL FROM:<outside@sender.example>');
      return await c.cmd('RCPT TO:<carol@family.example>');
    } finally {
      c.close();
    }
  };
  assert.match(await rcpt(), /^550 5\.1\.1/);
  fs.appendFileSync(ctx.list, 'carol@family.example\n');
  assert.match(await rcpt(), /^250/);
  const show = await runCli(['config', 'show', '--config', ctx.site.configPath]);
  assert.match(show.stdout, /\[relay\]\ndomains = \["family\.example", "loop\.example", "sneaky\.example"\]/);
  assert.match(show.stdout, /recipients = ".*relay-recipients"/);
  // A quoted key with dots stays one key, as written in the file.
  assert.match(show.stdout, /\[relay\.next_hop\]\n"lan\.example" = "127\.0\.0\.3:\d+"/);
  assert.not.match(show.stdout, /\[relay\.next_hop\.lan\]/);
});

t('backup MX: queued while the primary is down, delivered to it (not to us) when it comes back', async (ctx) => {
  const r = await sendMessage(ctx.site.port, 'outside@sender.example', ['alice@family.example'], body('alice@family.example'));
  assert.match(r, /^250/);
  const cfg = ['--config', ctx.site.configPath];
  // The primary refuses connections: the mail waits with the reason.
  await waitFor('a deferral', async () => {
    const out = (await runCli(['mailq', ...cfg])).stdout;
    return /alice@family\.example/.test(out) && /ECONNREFUSED/.test(out);
  }, 20_000, 200);
  ctx.primary = await startSmarthost({ host: '127.0.0.2', port: ctx.mxPort });
  const [m] = await ctx.primary.waitForMessages(1, 20_000);
  assert.equal(m!.to, ['alice@family.example']);
  assert.match(m!.raw.toString(), /Subject: relay test/);
  await waitFor('an empty queue', async () => !/family\.example/.test((await runCli(['mailq', ...cfg])).stdout), 10_000, 200);
  assert.is(ctx.primary.messages.length, 1, 'one copy');
});

t('never to ourselves: best MX by name, or an MX whose address and port are ours, is deferred with the fix', async (ctx) => {
  for (const to of ['x@loop.example', 'y@sneaky.example', 'z@self.example']) {
    assert.match(await sendMessage(ctx.site.port, 'outside@sender.example', [to], body(to)), /^250/);
  }
  const cfg = ['--config', ctx.site.configPath];
  const q = await waitFor('both deferred as loops', async () => {
    const out = (await runCli(['mailq', ...cfg])).stdout;
    return (out.match(/loops back to myself/g)?.length ?? 0) >= 3 ? out : null;
  }, 20_000, 200);
  assert.match(q, /tidemail\.test \(preference 10\) is this machine/);
  assert.match(q, /mx\.sneaky\.example \(preference 10\) is this machine/);
  assert.match(q, /add loop\.example to \[local\] domains/);
  assert.match(q, /mail for self\.example loops back to myself: next hop 127\.0\.0\.1:\d+ is this machine/);
  // Nothing reached the primary for these, and no session came in on our MX-port listener.
  assert.ok(ctx.primary!.messages.every((m) => !m.to.some((a) => /loop|sneaky/.test(a))));
  assert.not.match(ctx.daemon.logs(), /client=127\.0\.0\.7|127\.0\.0\.7.*connect/);
});

t('next_hop: a LAN domain relayed to the named host, and shown as a route', async (ctx) => {
  assert.match(await sendMessage(ctx.site.port, 'outside@sender.example', ['nas@lan.example'], body('nas@lan.example')), /^250/);
  const [m] = await ctx.lan.waitForMessages(1, 20_000);
  assert.equal(m!.to, ['nas@lan.example']);
  const st = await runCli(['status', '--config', ctx.site.configPath]);
  assert.match(st.stdout, /relay-lan\.example/);
  assert.match(st.stdout, /127\.0\.0\.3:\d+ \(\[relay\] next_hop\)/);
});

t('tidemail check shows the MX list and our place in it', async (ctx) => {
  const r = await runCli(['check', '--config', ctx.site.configPath], { timeoutMs: 60_000 });
  const out = r.stdout + r.stderr;
  assert.match(out, /relay family\.example\s+MX 10 mx1\.family\.example, 20 tidemail\.test \(this host\): this host is a backup MX \(preference 20\); relayed mail goes to mx1\.family\.example by route direct/);
  assert.match(out, /FAIL\s+relay loop\.example\s+MX 10 tidemail\.test \(this host\)[^\n]*best MX[\s\S]*?fix: give the primary MX a lower preference/);
  assert.match(out, /FAIL\s+relay sneaky\.example\s+MX 10 mx\.sneaky\.example \(this host\)/);
  assert.match(out, /FAIL\s+relay self\.example\s+next hop 127\.0\.0\.1:\d+ is this machine: the mail would loop/);
  assert.match(out, /OK\s+relay lan\.example\s+relayed to 127\.0\.0\.3:\d+ \(next_hop, route relay-lan\.example\)/);
  assert.not.match(out, /at .*\.js:\d+/, 'no stack trace');
});

t.run();

// Config errors: file:line and a fix, exit 78, and nothing that destroys data suggested.
const errs = suite('relay config errors');

async function configCheck(extra: string): Promise<{ code: number | null; out: string; file: string }> {
  const site = await makeSite(extra);
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  return { code: r.code, out: r.stdout + r.stderr, file: site.configPath };
}

errs('a relay domain that is also local', async () => {
  const r = await configCheck('[local]\ndomains = ["family.example"]\n[relay]\ndomains = ["family.example"]\n');
  assert.is(r.code, 78);
  assert.match(r.out, new RegExp(`${r.file.replace(/[.]/g, '\\.')}:\\d+:\\d+: 'relay\\.domains' names family\\.example, which is also one of our own domains`));
  assert.match(r.out, /fix: a domain is either delivered here/);
});

errs('a bad domain, a bad next hop, an unknown key', async () => {
  let r = await configCheck('[relay]\ndomains = ["*.family.example"]\n');
  assert.is(r.code, 78);
  assert.match(r.out, /'relay\.domains' entry "\*\.family\.example" is not a domain name[\s\S]*fix: write domains without/);
  r = await configCheck('[relay.next_hop]\n"lan.example" = "nas.lan:99999"\n');
  assert.is(r.code, 78);
  assert.match(r.out, /:\d+:\d+: 'relay\.next_hop\.lan\.example' "nas\.lan:99999" is not HOST or HOST:PORT/);
  r = await configCheck('[relay]\ndomain = ["family.example"]\n');
  assert.is(r.code, 78);
  assert.match(r.out, /'relay\.domain' is not a known setting[\s\S]*did you mean 'domains'/);
});

errs('a route file named like a next_hop route', async () => {
  const site = await makeSite('[relay.next_hop]\n"lan.example" = "nas.lan:25"\n');
  site.route('relay-lan.example', 'kind = "local-only"\n');
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  assert.is(r.code, 78);
  assert.match(r.stdout + r.stderr, /relay-lan\.example\.toml:1:1: route name relay-lan\.example is the one \[relay\.next_hop\] gives its route[\s\S]*fix: rename/);
});

errs('a missing or malformed recipients list', async () => {
  const missing = path.join(tmpDir(), 'relay-recipients');
  let r = await configCheck(`[relay]\ndomains = ["family.example"]\nrecipients = "${missing}"\n`);
  assert.is(r.code, 78);
  assert.match(r.out, /:\d+:\d+: 'relay\.recipients' file .* does not exist[\s\S]*fix: create it with one address per line/);
  assert.not.match(r.out, /install -m|> |truncate/);
  const bad = writeFile(path.join(tmpDir(), 'relay-recipients'), 'alice@family.example\nnot-an-address\n');
  r = await configCheck(`[relay]\ndomains = ["family.example"]\nrecipients = "${bad}"\n`);
  assert.is(r.code, 78);
  assert.match(r.out, new RegExp(`${bad.replace(/[.]/g, '\\.')}:2: "not-an-address" is not an address or @domain`));
});

errs.after(() => cleanupTmp());
errs.run();
