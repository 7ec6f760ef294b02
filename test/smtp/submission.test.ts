// Submission, TLS and AUTH on the front door (src/smtp/server.ts, auth.ts, tls.ts,
// sender-control.ts, users-file.ts), driven through the real daemon: STARTTLS then AUTH then
// relay, AUTH refused in clear, 530 before AUTH, 535 on a wrong password, implicit TLS, and
// per-user sender control at MAIL FROM and on the From: header.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { hashPassword } from '../../src/local/passwords.js';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { testCerts } from '../helpers/certs.js';
import { freePort } from '../helpers/ports.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp, writeFile, writeSecret } from '../helpers/tmp.js';

const PASSWORD = 'correct horse battery staple';
const clients: RawSmtp[] = [];
let shared: { site: TestSite; d: RunningDaemon; submission: number; smtps: number; ca: Buffer } | null = null;

/** A site with submission + smtps, the test cert, users alice and bob, and no trusted network. */
async function submissionSite(): Promise<{ site: TestSite; submission: number; smtps: number }> {
  const submission = await freePort();
  const smtps = await freePort();
  const certs = testCerts();
  const site = await makeSite('', {
    smtpToml: `submission = ["127.0.0.1:${submission}"]
smtps = ["127.0.0.1:${smtps}"]
tls_cert = "cert.pem"
tls_key = "key.pem"
[smtp.senders]
alice = ["alice@example.net", "*@alice.example"]
`,
  });
  const toml = fs.readFileSync(site.configPath, 'utf8');
  // Nobody is trusted: relaying must come from AUTH, not from being on loopback.
  fs.writeFileSync(site.configPath, toml.replace(/^trusted_networks = .*$/m, 'trusted_networks = ["192.0.2.0/24"]'));
  writeFile(path.join(site.dir, 'cert.pem'), certs.cert);
  writeFile(path.join(site.dir, 'key.pem'), certs.key, 0o600);
  writeSecret(path.join(site.dir, 'users'), `alice:${await hashPassword(PASSWORD)}\nbob:${await hashPassword('bobs secret')}\n`);
  return { site, submission, smtps };
}

test.before(async () => {
  const { site, submission, smtps } = await submissionSite();
  const d = await startDaemon(site);
  shared = { site, d, submission, smtps, ca: fs.readFileSync(testCerts().caFile) };
});
test.after.each(() => {
  for (const c of clients.splice(0)) c.close();
});
test.after(async () => {
  await shared?.d.stop();
  cleanupTmp();
});

function ctx() {
  assert.ok(shared, 'daemon started');
  return shared!;
}

async function connect(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  clients.push(c);
  return c;
}

const plain = (user: string, pass: string) => Buffer.from(`\0${user}\0${pass}`).toString('base64');

/** Greeting, EHLO, STARTTLS, EHLO again, AUTH PLAIN as `user`; returns the TLS session. */
async function loggedIn(user = 'alice', pass = PASSWORD, port = ctx().submission): Promise<RawSmtp> {
  const c = await connect(port);
  await c.hello();
  const t = await c.startTls(ctx().ca);
  clients.push(t);
  assert.match(await t.cmd('EHLO client.test'), /AUTH PLAIN LOGIN/);
  assert.match(await t.cmd(`AUTH PLAIN ${plain(user, pass)}`), /^235 /);
  return t;
}

async function data(c: RawSmtp, body: string): Promise<string> {
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(body + '.\r\n');
  return c.reply(30_000);
}

const message = (from: string) => `From: ${from}\r\nTo: <friend@remote.example>\r\nSubject: hi\r\n\r\nhello\r\n`;

test('in clear, submission offers STARTTLS but not AUTH, and refuses AUTH with 538 5.7.11', async () => {
  const c = await connect(ctx().submission);
  const ehlo = await c.hello();
  assert.match(ehlo, /STARTTLS/);
  assert.not.match(ehlo, /AUTH/);
  assert.match(await c.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`), /^538 5\.7\.11 Encryption required/);
});

test('submission without AUTH gets 530 5.7.0 at MAIL FROM, in clear and over TLS', async () => {
  const c = await connect(ctx().submission);
  await c.hello();
  assert.match(await c.cmd('MAIL FROM:<alice@example.net>'), /^530 5\.7\.0 Authentication required/);
  const t = await c.startTls(ctx().ca);
  clients.push(t);
  await t.cmd('EHLO client.test');
  assert.match(await t.cmd('MAIL FROM:<alice@example.net>'), /^530 5\.7\.0 /);
});

test('STARTTLS, then AUTH, then relay to a remote domain works (nodemailer client)', async () => {
  const conn = new SMTPConnection({ port: ctx().submission, host: '127.0.0.1', requireTLS: true, tls: { ca: ctx().ca, servername: 'localhost' } });
  const call = <T>(fn: (cb: (err: Error | null, v?: T) => void) => void) => new Promise<T>((res, rej) => fn((err, v) => (err ? rej(err) : res(v as T))));
  try {
    await call<void>((cb) => conn.connect(() => cb(null)));
    await call<void>((cb) => conn.login({ user: 'alice', pass: PASSWORD }, (err) => cb(err ?? null)));
    const info = await call<SMTPConnection.SentMessageInfo>((cb) =>
      conn.send({ from: 'alice@example.net', to: ['friend@remote.example'] }, message('Alice <alice@example.net>'), (err, i) => cb(err, i)));
    assert.equal(info.accepted, ['friend@remote.example']);
    assert.match(info.response, /^250 2\.0\.0 Ok: queued as /);
  } finally {
    conn.close();
  }
  assert.match(ctx().d.logs(), /auth ok .*user=alice/);
});

test('a wrong password gets 535 5.7.8 and the log line has no password', async () => {
  const c = await connect(ctx().submission);
  await c.hello();
  const t = await c.startTls(ctx().ca);
  clients.push(t);
  await t.cmd('EHLO client.test');
  const started = Date.now();
  assert.match(await t.cmd(`AUTH PLAIN ${plain('alice', 'wrong-guess-123')}`), /^535 5\.7\.8 /);
  assert.ok(Date.now() - started >= 900, 'a failed login is delayed');
  assert.match(await t.cmd(`AUTH PLAIN ${plain('nosuchuser', 'whatever-456')}`), /^535 5\.7\.8 /);
  await ctx().d.waitForLog(/auth failed .*user=nosuchuser/);
  assert.not.match(ctx().d.logs(), /wrong-guess-123|whatever-456/);
});

test('implicit TLS on the smtps port: AUTH LOGIN, then a message is accepted', async () => {
  const c = await RawSmtp.connectTls(ctx().smtps, ctx().ca);
  clients.push(c);
  const ehlo = await c.hello();
  assert.match(ehlo, /AUTH PLAIN LOGIN/);
  assert.not.match(ehlo, /STARTTLS/);
  assert.match(await c.cmd('MAIL FROM:<alice@example.net>'), /^530 /);
  assert.match(await c.cmd('AUTH LOGIN'), /^334 /);
  assert.match(await c.cmd(Buffer.from('alice').toString('base64')), /^334 /);
  assert.match(await c.cmd(Buffer.from(PASSWORD).toString('base64')), /^235 /);
  assert.match(await c.cmd('MAIL FROM:<me@alice.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<friend@remote.example>'), /^250 /);
  assert.match(await data(c, message('me@alice.example')), /^250 /);
});

test("a user sending as someone else's address gets 553 5.7.1 at MAIL FROM", async () => {
  const t = await loggedIn();
  assert.match(await t.cmd('MAIL FROM:<bob@tidemail.test>'), /^553 5\.7\.1 <bob@tidemail\.test>: Sender address rejected: not owned by user alice/);
  const b = await loggedIn('bob', 'bobs secret');
  // bob has no [smtp.senders] entry: bob@ each local domain is his
  assert.match(await b.cmd('MAIL FROM:<bob@tidemail.test>'), /^250 /);
  assert.match(await b.cmd('RSET'), /^250 /);
  assert.match(await b.cmd('MAIL FROM:<alice@example.net>'), /^553 5\.7\.1 .*not owned by user bob/);
});

test('a forged From: header is refused at end of DATA, and nothing is queued', async () => {
  const t = await loggedIn();
  assert.match(await t.cmd('MAIL FROM:<alice@example.net>'), /^250 /);
  assert.match(await t.cmd('RCPT TO:<friend@remote.example>'), /^250 /);
  assert.match(await data(t, message('"Bob" <bob@tidemail.test>')), /^553 5\.7\.1 Message refused: From: header address <bob@tidemail\.test> not owned by user alice/);
  // the session is still usable: an honest message goes through
  assert.match(await t.cmd('MAIL FROM:<alice@example.net>'), /^250 /);
  assert.match(await t.cmd('RCPT TO:<friend@remote.example>'), /^250 /);
  assert.match(await data(t, message('alice@example.net')), /^250 /);
});

test('port 25: no relay without AUTH from an untrusted address; AUTH after STARTTLS relays', async () => {
  const c = await connect(ctx().site.port);
  const ehlo = await c.hello();
  assert.match(ehlo, /STARTTLS/);
  assert.not.match(ehlo, /AUTH/);
  assert.match(await c.cmd('MAIL FROM:<someone@remote.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<friend@remote.example>'), /^554 5\.7\.1 /);
  const t = await loggedIn('alice', PASSWORD, ctx().site.port);
  assert.match(await t.cmd('MAIL FROM:<alice@example.net>'), /^250 /);
  assert.match(await t.cmd('RCPT TO:<friend@remote.example>'), /^250 /);
});

test('allow_plain_auth_on_localhost lets a loopback listener take AUTH in clear', async () => {
  const { site, submission } = await submissionSite();
  const toml = fs.readFileSync(site.configPath, 'utf8');
  fs.writeFileSync(site.configPath, toml.replace(/^\[smtp\.senders\]$/m, 'allow_plain_auth_on_localhost = true\n[smtp.senders]'));
  const d = await startDaemon(site);
  try {
    const c = await connect(submission);
    assert.match(await c.hello(), /AUTH PLAIN LOGIN/);
    assert.match(await c.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`), /^235 /);
    assert.match(await c.cmd('MAIL FROM:<alice@example.net>'), /^250 /);
  } finally {
    for (const c of clients.splice(0)) c.close();
    await d.stop();
  }
});

test('with no users, AUTH is neither offered nor accepted; adding one offers it without a restart', async () => {
  const { site, submission } = await submissionSite();
  fs.writeFileSync(path.join(site.dir, 'users'), '', { mode: 0o600 });
  const d = await startDaemon(site);
  try {
    const c = await connect(submission);
    await c.hello();
    const t = await c.startTls(fs.readFileSync(testCerts().caFile));
    assert.not.match(await t.cmd('EHLO client.test'), /AUTH/);
    assert.match(await t.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`), /^503 5\.5\.1 AUTH is not available/);
    const add = await runCli(['user', 'add', 'alice', '--config', site.configPath], { input: `${PASSWORD}\n` });
    assert.is(add.code, 0, add.stderr);
    const c2 = await connect(submission);
    await c2.hello();
    const t2 = await c2.startTls(fs.readFileSync(testCerts().caFile));
    assert.match(await t2.cmd('EHLO client.test'), /AUTH PLAIN LOGIN/);
    assert.match(await t2.cmd(`AUTH PLAIN ${plain('alice', PASSWORD)}`), /^235 /);
  } finally {
    for (const c of clients.splice(0)) c.close();
    await d.stop();
  }
});

test('submission without a certificate is a config error that names the fix', async () => {
  const site = await makeSite('', { smtpToml: `submission = ["127.0.0.1:${await freePort()}"]\n` });
  const r = await runCli(['daemon', '--config', site.configPath], { timeoutMs: 15_000 });
  assert.is(r.code, 78);
  assert.match(r.stderr, new RegExp(`${site.configPath.replace(/[.]/g, '\\.')}:\\d+(:\\d+)?: 'smtp\\.submission' needs a TLS certificate`));
  assert.match(r.stderr, /fix: set tls_cert = .* and tls_key = /);
});

test('without a certificate port 25 offers no STARTTLS', async () => {
  const site = await makeSite();
  const d = await startDaemon(site);
  try {
    const c = await connect(site.port);
    const ehlo = await c.hello();
    assert.not.match(ehlo, /STARTTLS|AUTH/);
    assert.match(await c.cmd('STARTTLS'), /^5\d\d /);
  } finally {
    for (const c of clients.splice(0)) c.close();
    await d.stop();
  }
});

test('a users file that is not 0600 stops the daemon with exit 78 and file:line', async () => {
  const { site } = await submissionSite();
  fs.chmodSync(path.join(site.dir, 'users'), 0o644);
  const r = await runCli(['daemon', '--config', site.configPath], { timeoutMs: 15_000 });
  assert.is(r.code, 78);
  assert.match(r.stderr, new RegExp(`${site.configPath.replace(/[.]/g, '\\.')}:\\d+(:\\d+)?: users file .*users has mode 0644; it must be 0600`));
  assert.match(r.stderr, /fix: chmod 600 /);
});

test.run();
