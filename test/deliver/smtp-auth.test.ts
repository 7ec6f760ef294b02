// Secret files are reread when they change (issue 18): a corrected smarthost password works at
// the next attempt without SIGHUP, the 535 message and `status` name the file and when it was
// read; a POP3 password broken on disk is noticed at the next fetch (`tidemail fetch` exits 78,
// naming the file) instead of the old password being used on.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { haveDovecot, startDovecot } from '../helpers/dovecot.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => cleanupTmp());

test('a corrected smarthost password file is used at the next attempt, no SIGHUP; 535 and status name the file', async () => {
  const sh = keep(await startSmarthost({ auth: { user: 'me', pass: 'right' } }));
  const site = await makeSite('[queue]\nretry_min = "1h"');
  const secret = `${site.dir}/secrets/isp`;
  writeSecret(secret, 'wrong\n');
  site.route('isp', smarthostRoute(sh.port, `allow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${secret}"`));
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'a@tidemail.test', ['p@remote.example'], 'Subject: auth\r\n\r\nx\r\n');
  const [line] = await d.waitForLog(/deferred to=<p@remote\.example>.*/);
  // Which file, and which read of it, the refused password came from.
  assert.match(line, new RegExp(`535.*password from ${secret.replace(/[/.]/g, '\\$&')}, read \\d{4}-\\d\\d-\\d\\dT`));
  const st = await runCli(['status', '--config', site.configPath]);
  assert.match(st.stdout, new RegExp(`secret ${secret.replace(/[/.]/g, '\\$&')}: read \\d+s ago`));

  writeSecret(secret, 'right\n'); // no SIGHUP
  const r = await runCli(['queue', 'flush', '--config', site.configPath]);
  assert.equal(r.code, 0, r.stderr);
  const [m] = await sh.waitForMessages(1, 15_000);
  assert.equal(m!.user, 'me');
  assert.not.match(d.logs(), /configuration reloaded/);
});

/** A route to `sh` logging in as `me` with `pass`; a daemon whose first attempt at p@remote.example is deferred and logged. */
async function refusedLogin(sh: { port: number }, pass: string, rcpt: string): Promise<{ site: Awaited<ReturnType<typeof makeSite>>; logLine: string; logs: () => string }> {
  const site = await makeSite('[queue]\nretry_min = "1h"');
  const secret = `${site.dir}/secrets/isp`;
  writeSecret(secret, `${pass}\n`);
  site.route('isp', smarthostRoute(sh.port, `allow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${secret}"`));
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'a@tidemail.test', [rcpt], 'Subject: auth\r\n\r\nx\r\n');
  const [logLine] = await d.waitForLog(new RegExp(`deferred to=<${rcpt.replace(/[.]/g, '\\.')}>.*`));
  return { site, logLine: logLine!, logs: () => d.logs() };
}

/** What every local user can read about the failure: mailq, status (text and JSON), and the daemon's log. */
async function shown(site: Awaited<ReturnType<typeof makeSite>>, logs: () => string): Promise<string> {
  const outs = await Promise.all([['mailq', '--config', site.configPath], ['status', '--config', site.configPath], ['status', '--json', '--config', site.configPath]].map((a) => runCli(a)));
  for (const o of outs) assert.is(o.code, 0, o.stderr);
  return [...outs.map((o) => o.stdout), logs()].join('\n');
}

test('a smarthost echoing AUTH PLAIN\'s blob and the password in its 535: mailq, status and the log say [redacted], never the secret', async () => {
  const pass = 'Tr0ub4dor&3-horse';
  const blob = Buffer.from(`\0me\0${pass}`).toString('base64');
  const sh = keep(await startSmarthost({
    auth: { user: 'me', pass },
    authReply: (l) => `5.7.8 refused AUTH ${l.method} ${Buffer.from(`\0${l.username}\0${l.password}`).toString('base64')} (that is ${l.password}) session Zm9vYmFyYmF6cXV4MTIzNDU2`,
  }));
  const { site, logLine, logs } = await refusedLogin(sh, pass, 'plain@remote.example');
  assert.match(logLine, /535 5\.7\.8 refused AUTH PLAIN \[redacted\] \(that is \[redacted\]\) session \[redacted\]/);
  const all = await shown(site, logs);
  assert.match(all, /last error.*authentication as me failed .*refused AUTH PLAIN \[redacted\]/);
  for (const secret of [pass, blob, Buffer.from(pass).toString('base64'), 'Zm9vYmFyYmF6cXV4MTIzNDU2']) assert.not.ok(all.includes(secret), `${secret} shown`);
});

test('AUTH LOGIN with a short password: its base64 (under 16 characters) echoed back is still redacted', async () => {
  const pass = 'hunter2';
  const sh = keep(await startSmarthost({ auth: { user: 'me', pass }, authMethods: ['LOGIN'], authReply: (l) => `5.7.8 ${l.method} ${Buffer.from(l.password).toString('base64')} ${l.password} not accepted` }));
  const { site, logLine, logs } = await refusedLogin(sh, pass, 'login@remote.example');
  assert.match(logLine, /535 5\.7\.8 LOGIN \[redacted\] \[redacted\] not accepted/);
  const all = await shown(site, logs);
  assert.not.ok(all.includes(pass) || all.includes('aHVudGVyMg=='), 'the password or its base64 is shown');
});

test('what a refusal says stays readable: Microsoft 365\'s "SmtpClientAuthentication is disabled" is not taken for an encoding', async () => {
  const said = '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [DB9PR02CA0011.eurprd02.prod.outlook.com]';
  const sh = keep(await startSmarthost({ auth: { user: 'me', pass: 'right' }, authReply: () => said }));
  const { site, logLine, logs } = await refusedLogin(sh, 'wrong-password', 'ms@remote.example');
  assert.ok(logLine.includes(`535 ${said}`), logLine);
  assert.ok((await shown(site, logs)).includes(`535 ${said}`), 'mailq and status say it as the server did');
});

(haveDovecot() ? test : test.skip)('a POP3 password broken on disk is noticed at the next fetch: exit 78, the file named', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const site = await makeSite(`[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon" }`);
    const secret = path.join(site.dir, 'secrets', 'pop');
    writeSecret(secret, 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${secret}"\ndeliver_to = "alice"\n`);
    keep(await startDaemon(site));
    const ok = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);

    writeSecret(secret, 'broken\n'); // no SIGHUP: the next fetch must use it, and fail
    const bad = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(bad.code, 78, bad.stdout + bad.stderr);
    assert.match(bad.stdout, new RegExp(`isp/me: POP3 login .* refused .*password from ${secret.replace(/[/.]/g, '\\$&')}, read `));
    assert.not.match(bad.stdout, /broken/); // the secret itself is never shown

    writeSecret(secret, 'secret\n');
    const again = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    await waitFor('status shows the secret read', async () => /secret .*secrets\/pop: read/.test((await runCli(['status', '--config', site.configPath])).stdout));
  } finally {
    await dovecot.stop();
  }
});

test.run();
