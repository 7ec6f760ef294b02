// `tidemail check` against deliberately broken setups, each next to the working one: an expired
// certificate (made with openssl), an unreachable smarthost, a wrong AUTH password against a real
// smarthost, an offline route (never touched), and an Internet site whose DNS records (served by
// a local DNS responder) are missing or wrong. Every problem is a FAIL line naming the fix, the
// exit code is non-zero exactly when something FAILs, and --json says the same.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { testCerts } from '../helpers/certs.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer, type DnsZone } from '../helpers/dns-server.js';
import { freePort } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const track = stopAfterEach(test);
const dnsServers: DnsServer[] = [];
test.after.each(async () => {
  for (const d of dnsServers.splice(0)) await d.close();
});

interface Finding {
  area: string;
  level: 'ok' | 'warn' | 'fail' | 'skip';
  message: string;
  fix?: string;
}

async function check(site: TestSite, extra: string[] = []): Promise<{ code: number | null; out: string; findings: Finding[] }> {
  const text = await runCli(['check', '--config', site.configPath, ...extra], { timeoutMs: 60_000 });
  const json = await runCli(['check', '--json', '--config', site.configPath, ...extra], { timeoutMs: 60_000 });
  assert.is(json.code, text.code, `--json exits like the text form:\n${text.stdout}${text.stderr}\n--json:\n${json.stderr}`);
  const parsed = JSON.parse(json.stdout) as { ok: boolean; findings: Finding[] };
  assert.is(parsed.ok, text.code === 0);
  return { code: text.code, out: text.stdout + text.stderr, findings: parsed.findings };
}

/** The one finding of `area` whose message matches. */
function finding(fs: Finding[], area: string, message: RegExp): Finding {
  const f = fs.find((x) => x.area === area && message.test(x.message));
  assert.ok(f, `no ${area} finding matching ${message} in:\n${JSON.stringify(fs, null, 1)}`);
  return f!;
}

/** A certificate for tidemail.test valid between two dates (openssl ca can back-date). */
function certificate(start: string, end: string, cn = 'tidemail.test'): { cert: string; key: string } {
  const d = tmpDir('tidemail-cert-');
  const f = (n: string) => path.join(d, n);
  fs.writeFileSync(f('ca.cnf'), '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\npolicy = p\ndefault_md = sha256\ncopy_extensions = copy\nunique_subject = no\n[p]\ncommonName = supplied\n');
  fs.writeFileSync(f('index.txt'), '');
  fs.writeFileSync(f('serial'), '01\n');
  const ssl = (...a: string[]) => execFileSync('openssl', a, { cwd: d, stdio: 'ignore' });
  ssl('req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'key.pem', '-out', 'r.csr', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`);
  ssl('ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'key.pem', '-in', 'r.csr', '-out', 'cert.pem', '-startdate', start, '-enddate', end);
  fs.chmodSync(f('key.pem'), 0o600);
  return { cert: f('cert.pem'), key: f('key.pem') };
}

const stamp = (t: number) => new Date(t).toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';

test('a working smarthost: TLS verified and a test login accepted, and no mail is sent', async () => {
  const sh = track(await startSmarthost({ tls: 'starttls', auth: { user: 'me', pass: 'right' } }));
  const site = await makeSite();
  fs.mkdirSync(site.stateDir, { recursive: true });
  const pw = writeSecret(path.join(site.dir, 'secrets', 'isp'), 'right\n');
  site.route('isp', `smarthost = "localhost:${sh.port}"\ntls = "starttls"\ntls_ca_file = "${testCerts().caFile}"\nauth.user = "me"\nauth.password_file = "${pw}"\n`);
  const r = await check(site);
  assert.is(r.code, 0, r.out);
  finding(r.findings, 'config', /valid, 1 route/);
  finding(r.findings, 'route isp', /TLS\S* .*handshake verified/);
  finding(r.findings, 'route isp', /AUTH as me accepted/);
  finding(r.findings, 'state dir', /writable and fsync works/);
  finding(r.findings, 'ports', new RegExp(`127\\.0\\.0\\.1:${site.port}: can be bound`));
  assert.match(r.out, /^OK\s+route isp\s+AUTH as me accepted/m);
  assert.is(sh.messages.length, 0);
});

test('refused maildrop files set aside (.bad-*) → a WARN naming the directory and what to do', async () => {
  const site = await makeSite();
  const drop = path.join(site.stateDir, 'maildrop');
  fs.mkdirSync(drop, { recursive: true, mode: 0o1733 });
  assert.not.ok((await check(site)).findings.some((f) => /set aside/.test(f.message)));
  fs.writeFileSync(path.join(drop, '.bad-000000000000000000000001'), 'x');
  const f = finding((await check(site)).findings, 'state dir', /^1 refused file\(s\) set aside as \.bad-\* in /);
  assert.is(f.level, 'warn');
  assert.ok(f.message.endsWith(drop), f.message);
  assert.match(f.fix!, /"maildrop: refused".*after 7 days/);
});

test('a wrong AUTH password → FAIL with the server reply and the password file to fix', async () => {
  const sh = track(await startSmarthost({ tls: 'starttls', auth: { user: 'me', pass: 'Right-pw-1' } }));
  const site = await makeSite();
  const pw = writeSecret(path.join(site.dir, 'secrets', 'isp'), 'Wrong-pw-2\n');
  site.route('isp', `smarthost = "localhost:${sh.port}"\ntls_ca_file = "${testCerts().caFile}"\nauth.user = "me"\nauth.password_file = "${pw}"\n`);
  const r = await check(site);
  assert.is(r.code, 69, r.out);
  const f = finding(r.findings, 'route isp', /authentication as me failed .*535/);
  assert.is(f.level, 'fail');
  assert.ok(f.fix?.includes(pw), f.fix);
  assert.match(r.out, /^FAIL\s+route isp\s+authentication as me failed[^\n]*\n\s+fix: put the right password in /m);
  assert.not.match(r.out, /Wrong-pw-2|Right-pw-1/, 'the password never appears');
});

test('a smarthost that does not answer → FAIL; the same route offline is not touched', async () => {
  const port = await freePort();
  const site = await makeSite();
  site.route('isp', `smarthost = "127.0.0.1:${port}"\ntls = "none"\n`);
  const r = await check(site);
  assert.is(r.code, 69, r.out);
  const f = finding(r.findings, 'route isp', /cannot connect to 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
  assert.match(f.fix!, /nc -vz 127\.0\.0\.1/);

  // Offline (its flag file is missing): SKIP, exit 0, and not one connection to the smarthost.
  const sh = track(await startSmarthost({}));
  const off = await makeSite();
  off.route('isp', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nonline.file = "${path.join(off.dir, 'isp.up')}"\n`);
  const r2 = await check(off);
  assert.is(r2.code, 0, r2.out);
  assert.is(finding(r2.findings, 'route isp', /offline .*does not exist.*not probed/).level, 'skip');
  assert.is(sh.connections, 0);
  // With the daemon running, check takes the link state (and the ports) from it.
  writeFile(path.join(off.dir, 'isp.up'), '');
  const d = track(await startDaemon(off));
  const r3 = await check(off);
  assert.is(r3.code, 0, r3.out);
  finding(r3.findings, 'daemon', /running \(pid \d+\)/);
  finding(r3.findings, 'ports', /held by the running daemon/);
  finding(r3.findings, 'route isp', /answers/);
  await d.stop();
});

test('certificates: expired → FAIL, expiring in 5 days → WARN, wrong name → WARN, valid → OK', async () => {
  const now = Date.now();
  const day = 86_400_000;
  const run = async (c: { cert: string; key: string }) => {
    const site = await makeSite('', { smtpToml: `tls_cert = "${c.cert}"\ntls_key = "${c.key}"` });
    return check(site);
  };
  const expired = await run(certificate(stamp(now - 400 * day), stamp(now - 30 * day)));
  assert.is(expired.code, 69, expired.out);
  const f = finding(expired.findings, 'certificate', /expired on \d{4}-\d\d-\d\d/);
  assert.is(f.level, 'fail');
  assert.match(f.fix!, /renew|selfsigned/);

  const soon = await run(certificate(stamp(now - day), stamp(now + 5 * day)));
  assert.is(soon.code, 0, soon.out);
  assert.is(finding(soon.findings, 'certificate', /expires on .*in [56] day/).level, 'warn');

  const other = await run(certificate(stamp(now - day), stamp(now + 90 * day), 'elsewhere.test'));
  assert.is(other.code, 0, other.out);
  assert.is(finding(other.findings, 'certificate', /does not name tidemail\.test/).level, 'warn');

  const good = await run(certificate(stamp(now - day), stamp(now + 90 * day)));
  assert.is(good.code, 0, good.out);
  finding(good.findings, 'certificate', /valid until/);
  assert.not.ok(good.findings.some((x) => x.area === 'certificate' && x.level !== 'ok'), good.out);
});

test('an invalid config → exit 78 and one FAIL naming file:line:column', async () => {
  const site = await makeSite('[queue]\nretry_min = "soon"');
  const r = await check(site);
  assert.is(r.code, 78, r.out);
  const f = finding(r.findings, 'config', /tidemail\.toml:\d+:1: 'queue\.retry_min' is not a duration/);
  assert.match(f.fix!, /write e\.g\. retry_min = "30s"/);
});

/** An Internet site: mx route, DKIM key, and a DNS zone that says everything right. */
async function internetSite() {
  const peer = track(await startSmarthost({})); // stands in for a big provider's MX on "port 25"
  const key = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const p = key.publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  const zone: DnsZone = {
    // Not a loopback address: the resolver answers PTR for those from /etc/hosts.
    'tidemail.test': { A: ['192.0.2.25'] },
    '25.2.0.192.in-addr.arpa': { PTR: ['tidemail.test'] },
    'example.test': { MX: [[10, 'tidemail.test']], TXT: ['v=spf1 a:tidemail.test -all'] },
    'tidemail._domainkey.example.test': { TXT: [`v=DKIM1; k=rsa; p=${p}`] },
    '_dmarc.example.test': { TXT: ['v=DMARC1; p=quarantine'] },
    'gmail.com': { MX: [[5, 'mx.gmail.test']] },
    'mx.gmail.test': { A: ['127.0.0.1'] },
  };
  const dns = await startDnsServer(zone);
  dnsServers.push(dns);
  const site = await makeSite(
    `[local]\ndomains = ["example.test"]\n[checks]\ndata = ["dkim-sign"]\n[checks.dkim-sign]\nkeys = { "example.test" = "dkim/example.test.key" }\n`,
  );
  writeFile(path.join(site.dir, 'dkim', 'example.test.key'), key.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, 0o600);
  site.route('internet', `kind = "mx"\nport = ${peer.port}\ndns_servers = ["127.0.0.1:${dns.port}"]\n`);
  return { site, zone, dns, peer };
}

test('a laptop whose masqmail local_nets became an mx route for *.home.arpa is not an Internet site: no DNS or port 25 checks; an mx route for a public domain still is (issue 18)', async () => {
  const dns = await startDnsServer({});
  dnsServers.push(dns);
  const sh = track(await startSmarthost({}));
  const site = await makeSite('[local]\ndomains = ["pc.home.arpa"]\n');
  site.route('isp', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\n`);
  // What import-masqmail writes for local_nets = "*.home.arpa;printer.lan".
  site.route('local-net', `priority = 10\nkind = "mx"\ndns_servers = ["127.0.0.1:${dns.port}"]\nrecipients = ["*.home.arpa", "*@printer.lan"]\n`);
  const r = await check(site);
  assert.not.ok(r.findings.some((f) => f.area.startsWith('dns') || f.area === 'port 25 out'), r.out);
  finding(r.findings, 'route local-net', /direct delivery on the LAN \(recipients \*\.home\.arpa, \*@printer\.lan\): the Internet-site DNS checks do not apply/);
  assert.not.ok(r.findings.some((f) => f.level === 'fail'), r.out);

  site.route('local-net', `priority = 10\nkind = "mx"\ndns_servers = ["127.0.0.1:${dns.port}"]\nrecipients = ["*.home.arpa", "*@example.com"]\n`);
  const internet = await check(site);
  assert.is(internet.code, 69, internet.out);
  finding(internet.findings, 'dns tidemail.test', /has no A or AAAA record/);
});

test('aliases: a target that is nobody here and an alias loop are WARN lines with file:line, as newaliases says them; a stale table is named (issue 18)', async () => {
  const dir = tmpDir('tidemail-aliases-');
  const passwd = writeFile(path.join(dir, 'passwd'), 'alice:x:2001:2001::/home/alice:/bin/sh\n');
  const aliases = writeFile(path.join(dir, 'aliases'), 'postmaster: alice\nbob: nosuchuser\nping: pong\npong: ping\n');
  const site = await makeSite(`[local]\naliases = "${aliases}"\npasswd_file = "${passwd}"\n`);
  const r = await check(site);
  const f = r.findings.filter((x) => x.area === 'aliases');
  assert.ok(f.some((x) => x.level === 'warn' && x.message.startsWith(`${aliases}:2: bob: "nosuchuser" is neither an alias nor a user here`) && /create the user/.test(x.fix ?? '')), r.out);
  assert.ok(f.some((x) => x.level === 'warn' && /alias loop: ping → pong → ping/.test(x.message)), r.out);
  assert.ok(f.some((x) => x.level === 'warn' && /never compiled/.test(x.message) && x.fix === 'run newaliases'), r.out);
  assert.not.match(r.out, /alice/);

  writeFile(aliases, 'postmaster: alice\n');
  assert.is((await runCli(['newaliases', '--config', site.configPath])).code, 0);
  const clean = await check(site);
  assert.equal(clean.findings.filter((x) => x.area === 'aliases').map((x) => x.level), ['ok'], clean.out);
});

test('an Internet site with every record right: PTR, MX, SPF, DKIM, DMARC and port 25 all OK', async () => {
  const { site } = await internetSite();
  const r = await check(site);
  assert.is(r.code, 0, r.out);
  finding(r.findings, 'dns tidemail.test', /PTR of 192\.0\.2\.25 is tidemail\.test/);
  finding(r.findings, 'dns example.test', /MX .*includes tidemail\.test/);
  finding(r.findings, 'dns example.test', /SPF allows 192\.0\.2\.25/);
  finding(r.findings, 'dns example.test', /DKIM key tidemail\._domainkey\.example\.test published and matches/);
  finding(r.findings, 'dns example.test', /DMARC published \(p=quarantine\)/);
  finding(r.findings, 'dns example.test', /MTA-STS not used/);
  finding(r.findings, 'port 25 out', /answers: outbound SMTP is not blocked/);
  // "local users" and "aliases" report this machine's accounts and /etc/aliases (src/doctor/local-users.ts, aliases.ts), not the site's DNS.
  assert.not.ok(r.findings.some((f) => (f.level === 'fail' || f.level === 'warn') && f.area !== 'local users' && f.area !== 'aliases'), r.out);
});

test('an Internet site with missing or wrong DNS records → a FAIL (or WARN) per record, with the record to publish', async () => {
  const { site, zone } = await internetSite();
  delete zone['25.2.0.192.in-addr.arpa'];
  zone['example.test'] = { MX: [[10, 'mx.elsewhere.test']], TXT: ['v=spf1 ip4:192.0.2.1 -all'] };
  const other = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
  zone['tidemail._domainkey.example.test'] = { TXT: [`v=DKIM1; k=rsa; p=${other}`] };
  delete zone['_dmarc.example.test'];
  const r = await check(site);
  assert.is(r.code, 69, r.out);
  const ptr = finding(r.findings, 'dns tidemail.test', /192\.0\.2\.25 has no PTR record/);
  assert.is(ptr.level, 'fail');
  assert.is(finding(r.findings, 'dns example.test', /MX of example\.test is mx\.elsewhere\.test, not this host/).level, 'warn');
  const spf = finding(r.findings, 'dns example.test', /SPF of example\.test gives "fail" for 192\.0\.2\.25/);
  assert.match(spf.fix!, /add ip4:192\.0\.2\.25/);
  const dkim = finding(r.findings, 'dns example.test', /DKIM key .* is not the key in .*example\.test\.key/);
  assert.is(dkim.level, 'fail');
  const dmarc = finding(r.findings, 'dns example.test', /no DMARC record/);
  assert.is(dmarc.level, 'warn');
  assert.match(dmarc.fix!, /_dmarc\.example\.test IN TXT "v=DMARC1/);

  // Nothing published at all: SPF and DKIM say what to publish.
  delete zone['tidemail._domainkey.example.test'];
  zone['example.test'] = { MX: [[10, 'tidemail.test']] };
  const r2 = await check(site);
  const none = finding(r2.findings, 'dns example.test', /publishes no SPF record/);
  assert.match(none.fix!, /example\.test IN TXT "v=spf1/);
  const nokey = finding(r2.findings, 'dns example.test', /DKIM key tidemail\._domainkey\.example\.test is not published/);
  const pub = crypto.createPublicKey(fs.readFileSync(path.join(site.dir, 'dkim', 'example.test.key'))).export({ type: 'spki', format: 'der' }).toString('base64');
  assert.ok(nokey.fix!.includes(`p=${pub}`), nokey.fix);
});

test('MTA-STS: a malformed record, and a policy that cannot be fetched → FAIL', async () => {
  const { site, zone } = await internetSite();
  zone['_mta-sts.example.test'] = { TXT: ['v=STSv1; id=not valid!'] };
  const bad = await check(site);
  assert.is(bad.code, 69, bad.out);
  assert.match(finding(bad.findings, 'dns example.test', /_mta-sts\.example\.test is not one valid/).fix!, /v=STSv1; id=/);
  // A good record, but mta-sts.example.test does not even resolve: the policy cannot be fetched.
  zone['_mta-sts.example.test'] = { TXT: ['v=STSv1; id=20261125'] };
  const unfetched = await check(site);
  assert.is(unfetched.code, 69, unfetched.out);
  finding(unfetched.findings, 'dns example.test', /MTA-STS is announced but https:\/\/mta-sts\.example\.test\/\.well-known\/mta-sts\.txt could not be fetched/);
});

test('port 25 outbound blocked (nothing answers at the MX) → FAIL suggesting a smarthost', async () => {
  const { site } = await internetSite();
  const closed = await freePort();
  site.route('internet', fs.readFileSync(path.join(site.dir, 'routes', 'internet.toml'), 'utf8').replace(/port = \d+/, `port = ${closed}`));
  const r = await check(site);
  assert.is(r.code, 69, r.out);
  const f = finding(r.findings, 'port 25 out', /cannot reach mx\.gmail\.test \(127\.0\.0\.1\) on port \d+: ECONNREFUSED/);
  assert.match(f.fix!, /smarthost/);
});

test.run();
