// SMTP on stdin (`sendmail -bs`, inetd `smtpd`) answers RCPT as the daemon's port does: an
// unknown local user is refused with 550 5.1.1 while the client waits, not accepted into the
// maildrop and bounced later (issue 18).

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { BIN, makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

// root exists on every system; the other name on none.
const unknown = `nosuch${randomBytes(4).toString('hex')}@tidemail.test`;
const RCPTS = [unknown, 'root@tidemail.test', 'someone@remote.example'];

/** The RCPT replies' first lines, in order, from an -bs or smtpd transcript. */
const rcptReplies = (out: string) => out.split('\r\n').filter((l) => /^\d{3} /.test(l)).slice(3, 3 + RCPTS.length);

test('sendmail -bs and smtpd refuse an unknown local user at RCPT, as the daemon does', async () => {
  const site = await makeSite();
  const script = `EHLO client.test\r\nMAIL FROM:<alice@tidemail.test>\r\n${RCPTS.map((r) => `RCPT TO:<${r}>\r\n`).join('')}RSET\r\nQUIT\r\n`;
  const bs = await runCli(['-C', site.configPath, '-bs'], { argv0: 'sendmail', input: script });
  assert.is(bs.code, 0, bs.stderr);
  const smtpd = await runCli(['--config', site.configPath], { argv0: 'smtpd', input: script });
  assert.is(smtpd.code, 0, smtpd.stderr);

  const d = await startDaemon(site);
  const daemon: string[] = [];
  try {
    const c = await RawSmtp.connect(site.port);
    await c.hello();
    await c.cmd('MAIL FROM:<alice@tidemail.test>');
    for (const r of RCPTS) daemon.push((await c.cmd(`RCPT TO:<${r}>`)).split('\r\n')[0]!);
    c.close();
  } finally {
    await d.stop();
  }
  assert.match(daemon[0]!, /^550 5\.1\.1 <nosuch[0-9a-f]+@tidemail\.test>: Recipient address rejected: User unknown/);
  assert.equal(daemon.slice(1).map((l) => l.slice(0, 3)), ['250', '250']);
  for (const [name, out] of [['sendmail -bs', bs.stdout], ['smtpd', smtpd.stdout]] as const) {
    assert.equal(rcptReplies(out), daemon, `${name}:\n${out}`);
  }
  // Nothing was queued for the unknown user.
  assert.equal(fs.readdirSync(path.join(site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.')), []);
});

/** An inetd `smtpd` session written step by step: each part after the reply it waits for; then EOF. */
async function smtpdSession(configPath: string, steps: [RegExp, string][]): Promise<string> {
  await runCli(['--help'], { argv0: 'smtpd' }); // makes the smtpd link (and starts no session)
  const proc = spawn(process.execPath, [path.join(path.dirname(path.dirname(BIN)), 'dist', 'test-bin', 'smtpd'), '--config', configPath], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise((r) => proc.on('close', r));
  try {
    for (const [wait, send] of steps) {
      await waitFor(`${wait} from smtpd`, () => wait.test(out), 10_000);
      proc.stdin.write(send);
    }
    proc.stdin.end();
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
  } finally {
    proc.kill();
  }
  return out;
}

test('smtpd (inetd): a DATA ended by a bare LF is still seen, so EOF after a "." without its CRLF accepts nothing', async () => {
  const site = await makeSite();
  const maildrop = () => fs.readdirSync(path.join(site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.'));
  const head: [RegExp, string][] = [
    [/^220 /m, 'EHLO client.test\r\nMAIL FROM:<alice@tidemail.test>\r\nRCPT TO:<root@tidemail.test>\r\n'],
    [/^250 [^\r]*\r\n250 [^\r]*\r\n$/m, 'DATA\n'],
  ];
  const cut = await smtpdSession(site.configPath, [...head, [/^354 /m, 'Subject: cut\r\n\r\nbody\r\n.']]);
  assert.match(cut, /^354 /m, cut);
  assert.not.match(cut, /queued/, cut);
  assert.equal(maildrop(), [], `a message the client never ended was accepted:\n${cut}`);
  // The same with its final CRLF is a message like any other.
  const whole = await smtpdSession(site.configPath, [...head, [/^354 /m, 'Subject: whole\r\n\r\nbody\r\n.\r\n'], [/^250 [^\r]*queued/m, 'QUIT\r\n']]);
  assert.is(maildrop().length, 1, whole);
});

test('smtpd with an argument it does not know: EX_USAGE before any session, nothing written', async () => {
  const site = await makeSite();
  const r = await runCli(['--config', site.configPath, '--version'], { argv0: 'smtpd', input: 'QUIT\r\n' });
  assert.is(r.code, 64, r.stdout + r.stderr);
  assert.match(r.stderr, /smtpd: unknown argument "--version"; usage: smtpd \[--config FILE\]/);
  assert.is(r.stdout, '', 'no greeting: no session started');
  assert.not.ok(fs.existsSync(path.join(site.stateDir, 'maildrop')), 'no maildrop made');
});

test.run();
