// Autodiscovery for `setup … --user me@domain` without --smarthost, against a local DNS
// responder: RFC 6186/8314 SRV records first (implicit TLS preferred), then the provider
// templates in routes/ by domain. The fastmail template loads with the real route loader.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadRoute } from '../../src/routes/load.js';
import type { SmarthostRoute } from '../../src/routes/profile.js';
import { REPO, runCli } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';
import { applyPreset, assertApplied, passwordFile } from './apply.js';

let dns: DnsServer;
test.before(async () => {
  dns = await startDnsServer({
    // Implicit TLS and STARTTLS both offered: RFC 8314 says take implicit TLS.
    '_submissions._tcp.both.example': { SRV: [[10, 0, 465, 'smtp.both.example'], [20, 0, 4650, 'backup.both.example']] },
    '_submission._tcp.both.example': { SRV: [[0, 0, 587, 'smtp.both.example']] },
    // "." = not offered (RFC 6186 3.4): fall back to the next service.
    '_submissions._tcp.starttls.example': { SRV: [[0, 0, 0, '.']] },
    '_submission._tcp.starttls.example': { SRV: [[0, 0, 2587, 'mail.starttls.example']] },
    '_pop3s._tcp.starttls.example': { SRV: [[0, 0, 995, 'pop.starttls.example']] },
  });
});
test.after(async () => {
  await dns.close();
  cleanupTmp();
});

const discoverArgs = (user: string) => ['--user', user, '--password-file', passwordFile('pw'), '--dns-server', `127.0.0.1:${dns.port}`];

test('SRV: _submissions._tcp wins over _submission._tcp and gives implicit TLS on its port', async () => {
  const a = assertApplied(await applyPreset('laptop', discoverArgs('me@both.example')));
  const route = a.read('routes/isp.toml');
  assert.match(route, /^smarthost = "smtp\.both\.example:465"$/m);
  assert.match(route, /^tls = "implicit"/m);
  assert.match(a.result.stdout, /found smtp\.both\.example:465 \(implicit\) for me@both\.example by DNS SRV _submissions\._tcp\.both\.example/);
  assert.ok(dns.queries.some((q) => q.name === '_submissions._tcp.both.example' && q.type === 'SRV'));
});

test('SRV: a "." target means not offered; _submission._tcp gives STARTTLS; a POP3 server is pointed out', async () => {
  const a = assertApplied(await applyPreset('pi-home', [...discoverArgs('me@starttls.example'), '--lan', '10.9.0.0/16', '--local-user', 'nobody']));
  const route = a.read('routes/isp.toml');
  assert.match(route, /^smarthost = "mail\.starttls\.example:2587"$/m);
  assert.match(route, /^tls = "starttls"/m);
  assert.match(a.result.stdout, /add --fetch pop3s:\/\/me@starttls\.example@pop\.starttls\.example:995/);
});

test('no SRV records: the provider template for the domain (gmail.com → routes/gmail.toml)', async () => {
  const a = assertApplied(await applyPreset('laptop', discoverArgs('someone@gmail.com')));
  const route = a.read('routes/gmail.toml');
  assert.match(route, /^smarthost = "smtp\.gmail\.com:587"$/m);
  assert.match(route, /^auth\.user = "someone@gmail\.com"$/m);
  assert.match(route, /^messages_per_connection = 50$/m, 'the template\'s limits are kept');
  assert.match(a.result.stdout, /by provider template .*routes\/gmail\.toml/);
  assert.ok(dns.queries.some((q) => q.name === '_submissions._tcp.gmail.com'), 'SRV was asked first');
  assert.equal((await runCli(['config', 'check', '--config', a.configPath])).code, 0);
});

test('hotmail.com and fastmail.com map to their templates; outlook.com personal accounts use smtp-mail.outlook.com', async () => {
  const h = assertApplied(await applyPreset('laptop', discoverArgs('me@hotmail.com')));
  assert.match(h.read('routes/outlook.toml'), /^smarthost = "smtp-mail\.outlook\.com:587"$/m);
  const f = assertApplied(await applyPreset('laptop', discoverArgs('me@fastmail.com')));
  assert.match(f.read('routes/fastmail.toml'), /^smarthost = "smtp\.fastmail\.com:465"$/m);
  assert.match(f.read('routes/fastmail.toml'), /^tls = "implicit"/m);
});

test('--oauth2 with a provider writes the token endpoint from the template and the refresh token as a 0600 secret', async () => {
  const a = assertApplied(await applyPreset('laptop', [...discoverArgs('me@gmail.com'), '--oauth2', '--client-id', 'abc.apps.googleusercontent.com']));
  const route = a.read('routes/gmail.toml');
  assert.match(route, /^auth\.oauth2\.token_url = "https:\/\/oauth2\.googleapis\.com\/token"$/m);
  assert.match(route, /^auth\.oauth2\.client_id = "abc\.apps\.googleusercontent\.com"$/m);
  assert.equal(fs.statSync(path.join(a.etc, 'secrets', 'gmail.token')).mode & 0o777, 0o600);
});

test('nothing found for the domain: exit 64 naming --smarthost', async () => {
  const a = await applyPreset('laptop', discoverArgs('me@nowhere.example'));
  assert.equal(a.result.code, 64, a.result.stdout + a.result.stderr);
  assert.match(a.result.stderr, /missing --smarthost/);
  assert.match(a.result.stderr, /no SRV records and no provider template for nowhere\.example/);
});

test('routes/fastmail.toml loads with the route loader, as shipped', () => {
  const dir = tmpDir();
  const secrets = path.join(dir, 'secrets');
  const text = fs.readFileSync(path.join(REPO, 'routes', 'fastmail.toml'), 'utf8').split('/etc/tidemail/secrets').join(secrets);
  writeSecret(path.join(secrets, 'fastmail'), 'app-password\n');
  const r = loadRoute(writeFile(path.join(dir, 'routes', 'fastmail.toml'), text)) as SmarthostRoute;
  assert.equal([r.kind, r.host, r.port, r.tls], ['smarthost', 'smtp.fastmail.com', 465, 'implicit']);
  assert.equal(r.auth?.kind, 'password');
  assert.equal(r.rewrite.envelopeFrom, 'you@fastmail.com');
});

test.run();
