// Local delivery end to end: aliases, unknown users refused at RCPT, "deliver, then answer"
// (the mailbox has the message before the client sees 250), mixed local/remote, a refusal in
// session when every local delivery fails permanently, mbox read by a real mbox parser.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import { stopAfterEach } from '../helpers/cleanup.js';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { RawSmtp, sendMessage } from '../helpers/smtp-client.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';
import { maildirNew } from '../helpers/maildir.js';

const keep = stopAfterEach(test);

/** A site delivering to Maildirs under a temp dir; "admin" is the system user "daemon". */
async function localSite(extraLocal = '', aliases = 'root: admin\npostmaster: root\n') {
  const mail = tmpDir('tidemail-mail-');
  fs.chmodSync(mail, 0o777); // the daemon runs as nobody
  const aliasesFile = writeFile(path.join(mail, 'aliases'), aliases);
  const site = await makeSite(`[local]\naliases = "${aliasesFile}"\ndelivery = "maildir"\nmaildir = "${mail}/%u/Maildir"\nusers = { admin = "daemon" }\n${extraLocal}`);
  return { site, mail, aliasesFile };
}

test('echo hi | sendmail root lands in the admin\'s Maildir through the aliases', async () => {
  const { site, mail } = await localSite();
  const d = keep(await startDaemon(site));
  const r = await runCli(['-C', site.configPath, 'root'], { argv0: 'sendmail', input: 'hi\n' });
  assert.equal(r.code, 0, r.stderr);
  const [m] = await waitFor('the Maildir file', () => (maildirNew(`${mail}/daemon/Maildir`).length ? maildirNew(`${mail}/daemon/Maildir`) : null));
  assert.match(m!, /^Return-Path: <[^>]+@tidemail\.test>\n/);
  assert.match(m!, /Delivered-To: root@tidemail\.test\n/);
  assert.match(m!, /\n\nhi\n$/);
  assert.equal(fs.readdirSync(`${mail}/daemon/Maildir/tmp`).length, 0);
  await d.waitForLog(/delivered to=<root@tidemail\.test> route=local/);
});

test('unknown local users are refused at RCPT with 550 5.1.1; aliases to outside are accepted', async () => {
  const sh = keep(await startSmarthost());
  const { site } = await localSite('', 'root: admin\nfriend: someone@remote.example\nbob: nosuchuser\nping: pong\npong: ping\n');
  site.route('isp', smarthostRoute(sh.port));
  keep(await startDaemon(site));
  const c = await RawSmtp.connect(site.port);
  await c.hello();
  await c.cmd('MAIL FROM:<x@remote.example>');
  assert.match(await c.cmd('RCPT TO:<nosuchuser@tidemail.test>'), /^550 5\.1\.1 <nosuchuser@tidemail\.test>: Recipient address rejected/);
  // An alias to nobody is an unknown user too (5.1.1, issue 18), a loop is 5.4.6; the members
  // and the loop are the log's, not the client's (smtp/local-refusal.ts).
  assert.is(await c.cmd('RCPT TO:<bob@tidemail.test>'), '550 5.1.1 <bob@tidemail.test>: local delivery failed (the reason is for the postmaster)');
  assert.is(await c.cmd('RCPT TO:<ping@tidemail.test>'), '550 5.4.6 <ping@tidemail.test>: local delivery failed (the reason is for the postmaster)');
  assert.match(await c.cmd('RCPT TO:<friend@tidemail.test>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354/);
  c.write('Subject: fwd\r\n\r\nx\r\n.\r\n');
  assert.match(await c.reply(), /^250 /);
  c.close();
  const [m] = await sh.waitForMessages(1);
  assert.equal(m!.to, ['someone@remote.example']);
});

test('sendmail to an alias whose only target is nobody here bounces with 5.1.1, not 5.4.6 (issue 18)', async () => {
  const { site } = await localSite('', 'root: admin\nbob: nosuchuser\n');
  const d = keep(await startDaemon(site));
  const r = await runCli(['-C', site.configPath, 'bob'], { argv0: 'sendmail', input: 'Subject: to bob\n\nhi\n' });
  assert.equal(r.code, 0, r.stderr);
  await d.waitForLog(/bounced to=<bob@tidemail\.test>/);
  assert.match(d.logs(), /bounced to=<bob@tidemail\.test>.*5\.1\.1 bob@tidemail\.test: nosuchuser: no such user/);
  assert.not.match(d.logs(), /5\.4\.6/);
});

test('deliver, then answer: the local copy is in the Maildir before 250; the remote one is queued', async () => {
  const sh = keep(await startSmarthost());
  const { site, mail } = await localSite();
  site.route('isp', smarthostRoute(sh.port));
  keep(await startDaemon(site));
  const reply = await sendMessage(site.port, 'x@remote.example', ['admin@tidemail.test', 'far@remote.example'], 'Subject: both\r\n\r\nx\r\n');
  assert.match(reply, /^250 /);
  // No waiting: the file must already be there when the 250 arrives.
  assert.equal(maildirNew(`${mail}/daemon/Maildir`).length, 1);
  await sh.waitForMessages(1);
  assert.equal(sh.messages[0]!.to, ['far@remote.example']);
});

test('every local delivery failing permanently is a 5xx in session, with no bounce; exit 75 is queued', async () => {
  const sh = keep(await startSmarthost());
  const { site } = await localSite('[queue]\nretry_min = "1h"', 'nope: "|exit 67"\nlater: "|exit 75"\n');
  site.route('isp', smarthostRoute(sh.port));
  const d = keep(await startDaemon(site));
  const r1 = await sendMessage(site.port, 'x@remote.example', ['nope@tidemail.test'], 'Subject: nope\r\n\r\nx\r\n');
  assert.match(r1, /^5\d\d /);
  await sleep(300);
  assert.equal(sh.messages.length, 0, 'a bounce was sent for an in-session refusal');
  const r2 = await sendMessage(site.port, 'x@remote.example', ['later@tidemail.test'], 'Subject: later\r\n\r\nx\r\n');
  assert.match(r2, /^250 /);
  await d.waitForLog(/deferred to=<later@tidemail\.test> route=local/);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assert.match(q.stdout, /later@tidemail\.test/);
  assert.not.match(q.stdout, /nope@tidemail\.test/);
});

test('mbox delivery is read back by Python\'s mailbox module, "From " lines quoted', async () => {
  const mail = tmpDir('tidemail-mbox-');
  fs.chmodSync(mail, 0o777);
  const site = await makeSite(`[local]\naliases = ""\ndelivery = "mbox"\nmbox = "${mail}/%u"\nusers = { admin = "daemon" }`);
  keep(await startDaemon(site));
  for (const body of ['first\r\nFrom the start of a line\r\n', 'second\r\n>From quoted\r\n']) {
    assert.match(await sendMessage(site.port, 'x@remote.example', ['admin@tidemail.test'], `Subject: mbox\r\n\r\n${body}`), /^250 /);
  }
  const out = execFileSync('python3', ['-c', `
import mailbox, json
box = mailbox.mbox(${JSON.stringify(path.join(mail, 'daemon'))})
print(json.dumps([m.get_payload() for m in box]))
`], { encoding: 'utf8' });
  const bodies = JSON.parse(out) as string[];
  assert.equal(bodies.length, 2);
  assert.match(bodies[0]!, /first\n>From the start of a line\n/);
});

test('aliases change without a restart: newaliases, and the next message follows the new alias', async () => {
  const { site, mail, aliasesFile } = await localSite('', 'root: admin\n');
  const d = keep(await startDaemon(site));
  fs.writeFileSync(aliasesFile, 'root: admin\nsales: admin\n');
  const na = await runCli(['newaliases', '--aliases', aliasesFile]);
  assert.equal(na.code, 0, na.stderr);
  assert.match(await sendMessage(site.port, 'x@remote.example', ['sales@tidemail.test'], 'Subject: s\r\n\r\nx\r\n'), /^250 /);
  assert.equal(maildirNew(`${mail}/daemon/Maildir`).length, 1);
  void d;
});

test('an archive copy of every message goes to the archive Maildir', async () => {
  const sh = keep(await startSmarthost());
  const arch = tmpDir('tidemail-arch-');
  fs.chmodSync(arch, 0o777);
  const { site } = await localSite(`archive = "${arch}/Maildir"`);
  site.route('isp', smarthostRoute(sh.port));
  keep(await startDaemon(site));
  await sendMessage(site.port, 'x@tidemail.test', ['far@remote.example'], 'Subject: keep me\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  assert.equal(sh.messages[0]!.to, ['far@remote.example']);
  await waitFor('archive copy', () => maildirNew(`${arch}/Maildir`).length === 1);
  assert.match(maildirNew(`${arch}/Maildir`)[0]!, /Subject: keep me/);
});

test('killed during local delivery: the message is delivered after restart', async () => {
  const slowDir = tmpDir('tidemail-slow-');
  fs.chmodSync(slowDir, 0o777);
  const { site, mail } = await localSite('', `slow: "|sleep 3; cat > ${'$'}(mktemp ${slowDir}/slowXXXX)"\n`);
  void mail;
  const d = await startDaemon(site);
  const sending = sendMessage(site.port, 'x@remote.example', ['slow@tidemail.test'], 'Subject: slow\r\n\r\nx\r\n').catch((e) => String(e));
  await d.waitForLog(/accepted from=<x@remote\.example>/);
  await d.kill9();
  await sending;
  const d2 = keep(await startDaemon(site));
  await waitFor('delivery after restart', () => fs.readdirSync(slowDir).length >= 1, 15_000, 100);
  void d2;
});

test.run();
