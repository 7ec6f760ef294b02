// `tidemail user add|passwd|remove|list` (src/cli/user.ts): the real CLI writes the users file,
// the real daemon authenticates against it — and picks up changes without a restart.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { testCerts } from '../helpers/certs.js';
import { freePort } from '../helpers/ports.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp, writeFile } from '../helpers/tmp.js';

const running: RunningDaemon[] = [];
const clients: RawSmtp[] = [];
test.after.each(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const d of running.splice(0)) await d.stop();
});
test.after(() => cleanupTmp());

async function site() {
  const submission = await freePort();
  const s = await makeSite('', { smtpToml: `submission = ["127.0.0.1:${submission}"]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n` });
  writeFile(path.join(s.dir, 'cert.pem'), testCerts().cert);
  writeFile(path.join(s.dir, 'key.pem'), testCerts().key, 0o600);
  return { ...s, submission, users: path.join(s.dir, 'users') };
}

/** STARTTLS + AUTH PLAIN on the submission port; returns the AUTH reply. */
async function login(port: number, user: string, pass: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  clients.push(c);
  await c.hello();
  const t = await c.startTls(fs.readFileSync(testCerts().caFile));
  clients.push(t);
  await t.cmd('EHLO client.test');
  return t.cmd(`AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`);
}

test('user add writes a 0600 scrypt line, prints no secret, and the daemon accepts the login', async () => {
  const s = await site();
  const add = await runCli(['user', 'add', 'carol', '--config', s.configPath], { input: 'pa55-word-carol\n' });
  assert.is(add.code, 0, add.stderr);
  assert.not.match(add.stdout + add.stderr, /pa55-word-carol/);
  const st = fs.statSync(s.users);
  assert.is(st.mode & 0o777, 0o600);
  const text = fs.readFileSync(s.users, 'utf8');
  assert.match(text, /^carol:scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+\n$/);
  assert.not.match(text, /pa55-word-carol/);
  assert.is(fs.readdirSync(s.dir).filter((n) => n.endsWith('.tmp')).length, 0, 'no temp file left');
  const list = await runCli(['user', 'list', '--config', s.configPath]);
  assert.is(list.stdout, 'carol\n');

  const d = await startDaemon(s);
  running.push(d);
  assert.match(await login(s.submission, 'carol', 'pa55-word-carol'), /^235 /);

  // passwd and remove take effect in the running daemon, without a restart
  const pw = await runCli(['user', 'passwd', 'carol', '--config', s.configPath], { input: 'new-pass-2\n' });
  assert.is(pw.code, 0, pw.stderr);
  assert.match(await login(s.submission, 'carol', 'pa55-word-carol'), /^535 /);
  assert.match(await login(s.submission, 'carol', 'new-pass-2'), /^235 /);
  assert.is((await runCli(['user', 'remove', 'carol', '--config', s.configPath])).code, 0);
  // carol was the only user: with nobody to log in, AUTH is not offered any more.
  assert.match(await login(s.submission, 'carol', 'new-pass-2'), /^503 5\.5\.1 AUTH is not available/);
});

test('user add refuses a duplicate (65), passwd an unknown user (67), and an empty password', async () => {
  const s = await site();
  assert.is((await runCli(['user', 'add', 'dave', '--config', s.configPath], { input: 'x-secret\n' })).code, 0);
  const dup = await runCli(['user', 'add', 'dave', '--config', s.configPath], { input: 'other\n' });
  assert.is(dup.code, 65);
  assert.match(dup.stderr, /already exists/);
  const unknown = await runCli(['user', 'passwd', 'erin', '--config', s.configPath], { input: 'x\n' });
  assert.is(unknown.code, 67);
  const empty = await runCli(['user', 'add', 'frank', '--config', s.configPath], { input: '\n' });
  assert.is(empty.code, 65);
  assert.match(empty.stderr, /empty password/);
  const usage = await runCli(['user', 'add', 'bad name', '--config', s.configPath], { input: 'x\n' });
  assert.is(usage.code, 64);
});

test('a plaintext password line in the users file is refused with file:line', async () => {
  const s = await site();
  writeFile(s.users, 'gina:hunter2\n', 0o600);
  const r = await runCli(['user', 'list', '--config', s.configPath]);
  assert.is(r.code, 78);
  assert.match(r.stderr, new RegExp(`${s.users.replace(/[.]/g, '\\.')}:1: the password of "gina" is not an scrypt hash`));
  assert.not.match(r.stderr, /hunter2/);
});

test.run();
