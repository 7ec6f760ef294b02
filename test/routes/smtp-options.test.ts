// Route options for speaking SMTP to the next hop, as an admin meets them through the real
// programs: AUTH over tls = "none" is refused at load (file:line and a fix) unless
// allow_plain_auth = true, which `tidemail check` then warns about; reply deadlines are
// validated like every other duration.

import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, type CliResult } from '../helpers/daemon.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

function assertConfigError(r: CliResult, file: string, line: number, problem: RegExp): void {
  assert.is(r.code, 78, `exit ${r.code}\n${r.stderr}`);
  assert.match(r.stderr, new RegExp(`${escape(file)}:${line}:\\d+\\b`), r.stderr);
  assert.match(r.stderr, problem, r.stderr);
  assert.match(r.stderr, /\n\s*fix: \S/, r.stderr);
  assert.not.match(r.stderr, /\n\s+at /, `stack trace:\n${r.stderr}`);
}

async function siteWithRoute(body: (pw: string) => string) {
  const site = await makeSite();
  const pw = writeSecret(path.join(site.dir, 'secrets', 'isp'), 'hunter2\n');
  site.route('isp', body(pw));
  return { site, file: path.join(site.dir, 'routes', 'isp.toml') };
}

test('tls = "none" with auth.* → 78 at the tls line, naming starttls/implicit and allow_plain_auth', async () => {
  const { site, file } = await siteWithRoute((pw) => `smarthost = "smtp.example.net:25"\ntls = "none"\nauth.user = "me"\nauth.password_file = "${pw}"\n`);
  for (const args of [['config', 'check'], ['daemon']]) {
    const r = await runCli([...args, '--config', site.configPath], { timeoutMs: 15_000 });
    assertConfigError(r, file, 2, /'tls' is "none" while auth is set: the login would go over the network unencrypted/);
    assert.match(r.stderr, /fix: use tls = "starttls" .*allow_plain_auth = true/);
    assert.not.match(r.stderr, /hunter2/);
  }
});

test('the same with OAuth2 (a bearer token is a password too) → 78', async () => {
  const { site, file } = await siteWithRoute((pw) => `smarthost = "smtp.example.net:25"\ntls = "none"\nauth.user = "me"\nauth.oauth2.token_url = "https://t.example/token"\nauth.oauth2.client_id = "c"\nauth.oauth2.refresh_token_file = "${pw}"\n`);
  assertConfigError(await runCli(['config', 'check', '--config', site.configPath]), file, 2, /while auth is set/);
});

test('allow_plain_auth = true loads, and `tidemail check` warns about it with a fix', async () => {
  const { site } = await siteWithRoute((pw) => `smarthost = "127.0.0.1:9"\ntls = "none"\nallow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${pw}"\n`);
  const c = await runCli(['config', 'check', '--config', site.configPath]);
  assert.is(c.code, 0, c.stderr);
  const r = await runCli(['check', '--config', site.configPath]);
  assert.match(r.stdout, /WARN\s+route isp\s+allow_plain_auth = true: the login may be sent unencrypted/);
  assert.match(r.stdout, /fix: use tls = "starttls" or "implicit" and remove allow_plain_auth/);
  assert.not.match(r.stderr, /\n\s+at /);
});

test('reply deadlines: "0s" and a non-duration are refused with file:line; good values load', async () => {
  const zero = await siteWithRoute(() => 'smarthost = "smtp.example.net:587"\n\nrcpt_timeout = "0s"\n');
  assertConfigError(await runCli(['config', 'check', '--config', zero.site.configPath]), zero.file, 3, /'rcpt_timeout' is zero[\s\S]*fix: write a positive duration, e\.g\. rcpt_timeout = "5m"/);
  const bad = await siteWithRoute(() => 'smarthost = "smtp.example.net:587"\ntransaction_timeout = "soon"\n');
  assertConfigError(await runCli(['config', 'check', '--config', bad.site.configPath]), bad.file, 2, /'transaction_timeout' is not a duration/);
  const good = await siteWithRoute(() => 'smarthost = "smtp.example.net:587"\ngreeting_timeout = "2m"\nhelo_timeout = "2m"\nmail_timeout = "1m"\nrcpt_timeout = "1m"\ndata_timeout = "1m"\ndata_done_timeout = "10m"\ntransaction_timeout = "30m"\n');
  const r = await runCli(['config', 'check', '--config', good.site.configPath]);
  assert.is(r.code, 0, r.stderr);
});

test.run();
