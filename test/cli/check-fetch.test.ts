// `tidemail check` tests the [[fetch]] accounts of online routes against a real Dovecot, as it
// tests the smarthost: TLS (STLS and implicit) verified, the login accepted, UIDL listed — and
// nothing fetched or deleted. A wrong password is a FAIL naming the password file (and when it
// was read), never the password; an unverifiable certificate names tls_ca_file; an offline
// route's accounts are not touched (issue 18).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { testCerts } from '../helpers/certs.js';
import { makeSite, runCli } from '../helpers/daemon.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { tmpDir, writeSecret } from '../helpers/tmp.js';

const track = stopAfterEach(test);
let dovecot: Dovecot | null = null;
test.after(async () => {
  await dovecot?.stop();
});

interface Finding {
  area: string;
  level: 'ok' | 'warn' | 'fail' | 'skip';
  message: string;
  fix?: string;
}

async function check(configPath: string): Promise<{ code: number | null; out: string; findings: Finding[] }> {
  const text = await runCli(['check', '--config', configPath], { timeoutMs: 60_000 });
  const json = await runCli(['check', '--json', '--config', configPath], { timeoutMs: 60_000 });
  return { code: text.code, out: text.stdout + text.stderr, findings: (JSON.parse(json.stdout) as { findings: Finding[] }).findings };
}

const fetchFindings = (fs: Finding[]) => fs.filter((f) => f.area.startsWith('fetch '));

/** A site whose route `isp` has a working smarthost and the given [[fetch]] entry. */
async function site(fetch: string, online = '') {
  const sh = track(await startSmarthost());
  const s = await makeSite();
  fs.mkdirSync(s.stateDir, { recursive: true });
  s.route('isp', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\n${online}[[fetch]]\n${fetch}deliver_to = "postmaster"\n`);
  return s;
}

(haveDovecot() ? test : test.skip)('a working account over STLS and over implicit TLS: TLS verified, login accepted, UIDL counted, nothing fetched or deleted', async () => {
  dovecot ??= await startDovecot({ users: { me: 'Pop-right-1' }, tls: true });
  dovecot.deliver('me', 'Subject: one\r\n\r\n1\r\n');
  dovecot.deliver('me', 'Subject: two\r\n\r\n2\r\n');
  const before = dovecot.mailbox('me').length;
  for (const [tls, port] of [['starttls', dovecot.port], ['implicit', dovecot.tlsPort]] as const) {
    const pw = writeSecret(path.join(tmpDir('tidemail-pw-'), 'pop'), 'Pop-right-1\n');
    const s = await site(`server = "localhost:${port}"\ntls = "${tls}"\ntls_ca_file = "${testCerts().caFile}"\nuser = "me"\npassword_file = "${pw}"\n`);
    const r = await check(s.configPath);
    assert.is(r.code, 0, r.out);
    const f = fetchFindings(r.findings);
    assert.ok(f.every((x) => x.level === 'ok' && x.area === 'fetch isp/me'), JSON.stringify(f, null, 1));
    assert.match(r.out, new RegExp(`^OK\\s+fetch isp/me\\s+localhost:${port} answers`, 'm'));
    assert.match(r.out, new RegExp(`^OK\\s+fetch isp/me\\s+TLS \\(${tls === 'implicit' ? 'implicit' : 'STLS'}\\) handshake verified`, 'm'));
    assert.match(r.out, /^OK\s+fetch isp\/me\s+login as me accepted \(test login; nothing fetched or deleted\)/m);
    assert.match(r.out, /^OK\s+fetch isp\/me\s+UIDL works: 2 message\(s\)/m);
  }
  assert.is(dovecot.mailbox('me').length, before, 'a message was deleted');
});

(haveDovecot() ? test : test.skip)('a wrong password → FAIL with the server reply and the password file with when it was read; the password never appears', async () => {
  dovecot ??= await startDovecot({ users: { me: 'Pop-right-1' }, tls: true });
  const dir = tmpDir('tidemail-pw-');
  const pw = writeSecret(path.join(dir, 'pop'), 'Pop-wrong-2\n');
  const s = await site(`server = "localhost:${dovecot.port}"\ntls = "starttls"\ntls_ca_file = "${testCerts().caFile}"\nuser = "me"\npassword_file = "${pw}"\n`);
  const r = await check(s.configPath);
  assert.is(r.code, 69, r.out);
  const f = fetchFindings(r.findings).find((x) => x.level === 'fail');
  assert.ok(f, r.out);
  assert.match(f!.message, new RegExp(`login as me refused: -ERR .*\\(password from ${pw}, read \\d{4}-`));
  assert.match(f!.fix ?? '', new RegExp(`put the right password in ${pw}`));
  assert.not.match(r.out, /Pop-wrong-2|Pop-right-1/);
});

(haveDovecot() ? test : test.skip)('an unverifiable certificate → FAIL naming tls_ca_file; an offline route\'s account is SKIP and not logged in to', async () => {
  dovecot ??= await startDovecot({ users: { me: 'Pop-right-1' }, tls: true });
  const dir = tmpDir('tidemail-pw-');
  const pw = writeSecret(path.join(dir, 'pop'), 'Pop-right-1\n');
  const s = await site(`server = "localhost:${dovecot.tlsPort}"\ntls = "implicit"\nuser = "me"\npassword_file = "${pw}"\n`);
  const r = await check(s.configPath);
  assert.is(r.code, 69, r.out);
  const f = fetchFindings(r.findings).find((x) => x.level === 'fail');
  assert.match(f?.message ?? '', /TLS to POP3 server localhost:\d+ failed/);
  assert.match(f?.fix ?? '', /tls_ca_file/);

  const logins = dovecot.logins('me');
  const off = await site(`server = "localhost:${dovecot.port}"\ntls = "starttls"\ntls_ca_file = "${testCerts().caFile}"\nuser = "me"\npassword_file = "${pw}"\n`, `online.file = "${path.join(dir, 'no-such-flag')}"\n`);
  const r2 = await check(off.configPath);
  const f2 = fetchFindings(r2.findings);
  assert.equal(f2.map((x) => x.level), ['skip'], r2.out);
  assert.match(f2[0]!.message, /route isp offline .*not probed/);
  assert.is(dovecot.logins('me'), logins);
});

test.run();
