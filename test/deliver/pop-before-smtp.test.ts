// SMTP-after-POP, end to end: the real daemon logs in to a private Dovecot by POP3 before it
// opens the SMTP connection to the smarthost.

import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testCerts } from '../helpers/certs.js';
import { makeSite, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';

let dc: Dovecot;
const running: { stop(): Promise<unknown> }[] = [];
test.before(async () => {
  if (!haveDovecot()) throw new Error('dovecot is not installed (apt-get install dovecot-pop3d; .ci/run does this)');
  dc = await startDovecot({ users: { alice: 'pop-secret', bob: 'pop-secret', carol: 'pop-secret' }, tls: true });
});
test.after.each(async () => {
  for (const r of running.splice(0).reverse()) await r.stop();
});
test.after(async () => {
  await dc?.stop();
  cleanupTmp();
});

async function setup(popToml: (site: TestSite) => string, env: NodeJS.ProcessEnv = {}): Promise<{ sh: Smarthost; site: TestSite; d: RunningDaemon }> {
  const sh = await startSmarthost();
  running.push({ stop: () => sh.close() });
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', smarthostRoute(sh.port, `messages_per_connection = 1\n${popToml(site)}`));
  const d = await startDaemon(site, env);
  running.push(d);
  return { sh, site, d };
}

function pop(site: TestSite, user: string, password: string, server: string, tls: string): string {
  const file = writeSecret(path.join(site.dir, 'secrets', `pop-${user}`), `${password}\n`);
  return `pop_before_smtp.server = "${server}"\npop_before_smtp.tls = "${tls}"\npop_before_smtp.user = "${user}"\npop_before_smtp.password_file = "${file}"\n`;
}

test('a POP3 login comes first, then the mail goes to the smarthost; the login is remembered', async () => {
  const { sh, site, d } = await setup((s) => pop(s, 'alice', 'pop-secret', `127.0.0.1:${dc.port}`, 'none'));
  await sendMessage(site.port, 'a@tidemail.test', ['x@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  // The smarthost has the message a moment before the daemon logs its reply.
  await d.waitForLog(/delivered to=<x@remote\.example>/);
  const logs = d.logs();
  const popAt = logs.indexOf('pop-before-smtp login ok');
  assert.ok(popAt >= 0, 'no POP3 login logged');
  assert.ok(popAt < logs.indexOf('delivered to=<x@remote.example>'));
  await waitFor('Dovecot to log the login', () => dc.logins('alice') === 1);
  // A second connection within the remembered window needs no new POP3 login.
  await sendMessage(site.port, 'a@tidemail.test', ['y@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await sh.waitForMessages(2);
  assert.equal(sh.connections, 2);
  await sleep(200);
  assert.equal(dc.logins('alice'), 1);
});

test('a wrong POP3 password defers with a clear log line; no SMTP connection, nothing bounced', async () => {
  const { sh, site, d } = await setup((s) => pop(s, 'bob', 'not-the-password', `127.0.0.1:${dc.port}`, 'none'));
  await sendMessage(site.port, 'sender@remote.example', ['z@remote.example'], 'Subject: no\r\n\r\nx\r\n');
  const line = (await d.waitForLog(/^.*pop-before-smtp failed.*$/m))[0];
  assert.match(line, /SMTP-after-POP login failed: POP3 server 127\.0\.0\.1:\d+ refused the login as bob: -ERR \[AUTH\] Authentication failed/);
  assert.ok(line.includes(path.join(site.dir, 'secrets', 'pop-bob')), `the log line should name the password file: ${line}`);
  assert.not.match(line, /not-the-password/);
  await d.waitForLog(/deferred to=<z@remote\.example>.*SMTP-after-POP login failed/);
  await sleep(300);
  assert.not.match(d.logs(), /bounce/);
  assert.equal(sh.connections, 0);
  assert.equal(sh.messages.length, 0);
});

test('STLS with a verified certificate (the CA trusted through NODE_EXTRA_CA_CERTS)', async () => {
  const { sh, site } = await setup((s) => pop(s, 'carol', 'pop-secret', `localhost:${dc.port}`, 'starttls'), { NODE_EXTRA_CA_CERTS: testCerts().caFile });
  await sendMessage(site.port, 'a@tidemail.test', ['t@remote.example'], 'Subject: tls\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await waitFor('a TLS login in the log', () => /Login: user=<carol>, method=PLAIN, .*TLS/.test(dc.log()));
});

test('implicit TLS to a POP3 server whose certificate does not verify defers the mail', async () => {
  const { sh, site, d } = await setup((s) => pop(s, 'carol', 'pop-secret', `localhost:${dc.tlsPort}`, 'implicit'));
  await sendMessage(site.port, 'a@tidemail.test', ['u@remote.example'], 'Subject: tls\r\n\r\nx\r\n');
  await d.waitForLog(/pop-before-smtp failed .*SMTP-after-POP login failed: TLS to POP3 server localhost:\d+ failed/);
  await d.waitForLog(/deferred to=<u@remote\.example>/);
  assert.equal(sh.connections, 0);
});

test.run();
