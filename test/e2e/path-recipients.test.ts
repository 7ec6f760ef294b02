// Envelope addresses that look like file or pipe targets ("/tmp/x@evil.example", "|cmd@host")
// must never become a path or a command: they are refused where they enter (SMTP RCPT and MAIL,
// sendmail arguments and -t headers, sendmail -bs, a hand-made maildrop file), and the archive
// Maildir ([local] archive) cannot be named by any envelope address.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { frontHelpers, GOOD } from '../helpers/smtp-front.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';

const { front, session, assertQueueEmpty } = frontHelpers(test);

/** A directory the daemon (nobody, when we are root) could create things in. */
function victimDir(): string {
  const d = tmpDir('tidemail-victim-');
  fs.chmodSync(d, 0o777);
  return d;
}

/** Everything under `dir`, recursively: must stay empty. */
const contents = (dir: string) => fs.readdirSync(dir, { recursive: true }) as string[];

/** A local user who exists (RCPT is accepted) and whose delivery defers. */
function localToml(extra = ''): string {
  const aliases = writeFile(path.join(tmpDir(), 'aliases'), 'me: "|exit 75"\n');
  return `[local]\naliases = "${aliases}"\n${extra}`;
}

const pathRecipients = (dir: string) => [
  `${dir}/a/y@evil.example`,
  `${dir}/b@tidemail.test`,
  `${dir}/c`,
  `|${dir}/cmd@tidemail.test`,
  `"${dir}/q"@tidemail.test`,
];

test('untrusted SMTP client: RCPT TO:</path@domain> and |pipe forms get 553 5.1.3; nothing is created', async () => {
  const dir = victimDir();
  const f = await front({ trusted: ['192.0.2.0/24'], smtpToml: 'greet_delay = "0s"', extraToml: localToml() });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<someone@remote.example>'), /^250 /);
  for (const rcpt of pathRecipients(dir)) {
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    // smtp-server itself refuses a bare local part (501); with a domain it is ours to refuse.
    assert.match(r, rcpt.includes('@') ? /^553 5\.1\.3 .*not a mailbox address/ : /^501 5\.1\.3 /, `RCPT TO:<${rcpt}>: ${r}`);
  }
  // The session goes on: a real recipient is still accepted.
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^250 /);
  assert.match(await c.cmd('RSET'), /^250 /);
  assert.match(await c.cmd(`MAIL FROM:<${dir}/s@evil.example>`), /^553 5\.1\.7 .*not a mailbox/);
  assert.equal(contents(dir), []);
  await assertQueueEmpty(f.site, 'refused path recipients');
  assert.match(f.d.logs(), /not a mailbox/);
});

test('trusted SMTP client: the same refusals (trust allows relaying, not files)', async () => {
  const dir = victimDir();
  const f = await front({ extraToml: localToml() });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  for (const rcpt of pathRecipients(dir)) assert.match(await c.cmd(`RCPT TO:<${rcpt}>`), /^5(53|01) 5\.1\.3 /, rcpt);
  assert.match(await c.cmd('DATA'), /^503 /);
  assert.equal(contents(dir), []);
});

test('the archive Maildir cannot be named as a recipient, even when its path looks like an address', async () => {
  const dir = victimDir();
  const archive = `${dir}/arch@tidemail.test`;
  const f = await front({ extraToml: localToml(`archive = "${archive}"`) });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<a@tidemail.test>'), /^250 /);
  assert.match(await c.cmd(`RCPT TO:<${archive}>`), /^553 5\.1\.3 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(GOOD + '.\r\n');
  assert.match(await c.reply(), /^250 /);
  // The configured archive still gets its copy.
  await waitFor('archive copy', () => {
    try {
      return fs.readdirSync(path.join(archive, 'new')).length === 1;
    } catch {
      return false;
    }
  });
});

test('sendmail: path recipients on the command line, in -t headers and in -bs are refused (exit 65)', async () => {
  const dir = victimDir();
  const f = await front({ extraToml: localToml() });
  const cfg = ['-C', f.site.configPath];
  const r1 = await runCli([...cfg, `${dir}/x@evil.example`], { argv0: 'sendmail', input: 'Subject: x\n\nx\n' });
  assert.is(r1.code, 65, r1.stderr);
  assert.match(r1.stderr, /^sendmail: <[^>]+\/x@evil\.example>: not a mailbox address/);
  assert.not.match(r1.stderr, /\n\s+at /);
  const r2 = await runCli([...cfg, '-t'], { argv0: 'sendmail', input: `To: me@tidemail.test, ${dir}/t@evil.example\nSubject: x\n\nx\n` });
  assert.is(r2.code, 65, r2.stderr);
  assert.match(r2.stderr, /not a mailbox address/);
  const r3 = await runCli([...cfg, '-f', `${dir}/f@evil.example`, 'me@tidemail.test'], { argv0: 'sendmail', input: 'Subject: x\n\nx\n' });
  assert.is(r3.code, 65, r3.stderr);
  assert.match(r3.stderr, /not a mailbox address/);
  const r4 = await runCli([...cfg, '-bs'], { argv0: 'sendmail', input: `EHLO x\r\nMAIL FROM:<a@tidemail.test>\r\nRCPT TO:<${dir}/bs@evil.example>\r\nQUIT\r\n` });
  assert.is(r4.code, 0, r4.stderr);
  assert.match(r4.stdout, /^553 5\.1\.3 /m);
  const r5 = await runCli([...cfg, `${dir}/r@evil.example`], { argv0: 'rmail', input: 'From uucp Mon Jan  1 00:00:00 2024\nSubject: x\n\nx\n' });
  assert.is(r5.code, 65, r5.stderr);
  assert.equal(contents(dir), []);
  assert.equal(fs.readdirSync(path.join(f.site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.')), []);
  await assertQueueEmpty(f.site, 'refused sendmail recipients');
});

test('a hand-made maildrop file (any local user can write one) naming a path is set aside, not delivered', async () => {
  const dir = victimDir();
  const mail = victimDir();
  const f = await front({ extraToml: localToml(`delivery = "maildir"\nmaildir = "${mail}/%u"\nusers = { admin = "daemon" }`) });
  const drop = path.join(f.site.stateDir, 'maildrop');
  const craft = (name: string, sender: string, recipients: string[]) => {
    const json = Buffer.from(JSON.stringify({ v: 1, sender, recipients, via: 'sendmail', uid: 1, created: Date.now() }) + '\n');
    const body = Buffer.from('Subject: crafted\r\n\r\nx\r\n');
    fs.writeFileSync(path.join(drop, `.part-${name}`), Buffer.concat([body, json, Buffer.from(String(json.length).padStart(10, '0') + '\n')]));
    fs.renameSync(path.join(drop, `.part-${name}`), path.join(drop, name));
  };
  craft('crafted1', 'a@tidemail.test', [`${dir}/m@evil.example`, 'admin@tidemail.test']);
  craft('crafted2', `${dir}/s@evil.example`, ['admin@tidemail.test']);
  const logged = (re: RegExp) => f.d.waitForLog(re).catch((err: Error) => assert.unreachable(`${err.message}\n${f.d.logs()}`));
  // (The pickup's envelope check uses the same address rule: the file is "not a complete maildrop file".)
  await logged(/maildrop: refused file=\S*\/crafted1 .*set aside/);
  // The second refusal of the same reason within the minute is counted, not logged (log/repeats.ts).
  await waitFor('crafted2 set aside', () => fs.existsSync(path.join(drop, '.bad-crafted2')));
  assert.ok(fs.existsSync(path.join(drop, '.bad-crafted1')) && fs.existsSync(path.join(drop, '.bad-crafted2')));
  // A sendmail-made message after them is delivered: the pickup goes on.
  const r = await runCli(['-C', f.site.configPath, 'admin@tidemail.test'], { argv0: 'sendmail', input: 'Subject: real\n\nx\n' });
  assert.is(r.code, 0, r.stderr);
  await waitFor('the admin copy', () => fs.existsSync(path.join(mail, 'daemon', 'new')) && fs.readdirSync(path.join(mail, 'daemon', 'new')).length === 1);
  assert.match(fs.readFileSync(path.join(mail, 'daemon', 'new', fs.readdirSync(path.join(mail, 'daemon', 'new'))[0]!), 'utf8'), /Subject: real/);
  assert.equal(contents(dir), []);
});

test.run();
