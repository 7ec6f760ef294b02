// Local delivery for every user, with the network-facing daemon unprivileged (issue 16): three
// real system users made here get their mail by SMTP, by sendmail and through an alias, each
// in their own ~/Maildir (or the spool mbox) owned by them; a .forward pipe runs as its owner;
// the SMTP daemon holds no root uid and no capability, and only its small helper stays root.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { filesIn, makeUsers, removeUsers, writeAs, type TestUser } from '../helpers/system-users.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => removeUsers());

const MSG = (s: string) => `From: x@remote.example\r\nSubject: ${s}\r\n\r\nhello ${s}\r\n`;

/** Status fields of a process: Uid line, CapEff. */
function procStatus(pid: number): { uids: number[]; capEff: string; ppid: number } {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)![1]!.trim();
  return { uids: field('Uid').split(/\s+/).map(Number), capEff: field('CapEff'), ppid: Number(field('PPid')) };
}

function childrenOf(pid: number): number[] {
  return fs
    .readdirSync('/proc')
    .filter((e) => /^\d+$/.test(e))
    .map(Number)
    .filter((p) => {
      try {
        return procStatus(p).ppid === pid;
      } catch {
        return false; // ended meanwhile
      }
    });
}

/** The socket inode listening on 127.0.0.1:port (/proc/net/tcp, state 0A). */
function listenInode(port: number): string {
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === `0100007F:${hex}` && f[3] === '0A') return f[9]!;
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}

const cmdline = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');

async function maildirSite(users: TestUser[], extraLocal = '') {
  const [a, b, c] = users as [TestUser, TestUser, TestUser];
  const aliases = writeFile(path.join(tmpDir(), 'aliases'), `family: ${a.name}, ${b.name}, ${c.name}\n`);
  return makeSite(`[local]\naliases = "${aliases}"\nforward = true\ndelivery = "maildir"\nmaildir = "~/Maildir"\n${extraLocal}[queue]\nretry_min = "1h"\n`);
}

if (!isRoot()) {
  test.skip('delivery as each system user (needs root to create users)', () => undefined);
} else {
  test('three users get SMTP, sendmail and alias mail in their own ~/Maildir, owned by them; a .forward pipe runs as its owner', async () => {
    const users = makeUsers(3);
    const [a, b, c] = users as [TestUser, TestUser, TestUser];
    // c sends everything to a command; it records whose rights it ran with.
    writeAs(c, path.join(c.home, '.forward'), `"|id -u >> ${c.home}/fwd-uid"\n`);
    const site = await maildirSite(users);
    const d = keep(await startDaemon(site));
    for (const u of users) assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG(`smtp ${u.name}`)), /^250 /);
    for (const u of users) {
      const r = await runCli(['-C', site.configPath, '-f', 'x@remote.example', u.name], { argv0: 'sendmail', input: `Subject: sendmail ${u.name}\n\nhi\n` });
      assert.is(r.code, 0, r.stderr);
    }
    assert.match(await sendMessage(site.port, 'x@remote.example', ['family@tidemail.test'], MSG('family')), /^250 /);

    for (const u of [a, b]) {
      const files = await waitFor(`3 messages for ${u.name}`, () => {
        const f = filesIn(path.join(u.home, 'Maildir', 'new'));
        return f.length === 3 ? f : null;
      }, 20_000);
      for (const f of files) assert.is(fs.statSync(f).uid, u.uid, `${f} owned by ${u.name}`);
      for (const sub of ['', 'new', 'cur', 'tmp']) assert.is(fs.statSync(path.join(u.home, 'Maildir', sub)).uid, u.uid);
      const all = files.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
      for (const s of [`smtp ${u.name}`, `sendmail ${u.name}`, 'family']) assert.match(all, new RegExp(`Subject: ${s}`));
      assert.match(all, new RegExp(`Delivered-To: ${u.name}@tidemail\\.test`));
    }
    const fwd = path.join(c.home, 'fwd-uid');
    await waitFor('c\'s pipe ran three times', () => fs.existsSync(fwd) && fs.readFileSync(fwd, 'utf8').trim().split('\n').length === 3, 20_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${d.logs()}`);
    });
    assert.equal(fs.readFileSync(fwd, 'utf8').trim().split('\n'), [String(c.uid), String(c.uid), String(c.uid)]);
    assert.is(fs.statSync(fwd).uid, c.uid);
    assert.not.ok(fs.existsSync(path.join(c.home, 'Maildir')), 'c forwards everything: no mailbox');
    assert.not.match(d.logs(), /\n\s+at /, 'a stack trace');
  });

  test('the SMTP daemon runs with no root uid and no capabilities; its delivery helper child is root and does not hold the SMTP port', async () => {
    const users = makeUsers(3);
    const site = await maildirSite(users);
    const d = keep(await startDaemon(site));
    const pid = d.proc.pid!;
    const st = procStatus(pid);
    assert.ok(st.uids.every((u) => u !== 0), `daemon uids ${st.uids.join(' ')}`);
    assert.is(st.capEff, '0000000000000000');
    const helpers = childrenOf(pid).filter((p) => /privsep[/-]helper\.c?js/.test(cmdline(p)));
    assert.is(helpers.length, 1, 'one delivery helper');
    assert.is(procStatus(helpers[0]!).uids[0], 0, 'the helper keeps root');
    // The helper holds no listening socket: the SMTP port belongs to the daemon alone.
    const listening = listenInode(site.port);
    const fdsOf = (p: number) => fs.readdirSync(`/proc/${p}/fd`).map((f) => fs.readlinkSync(`/proc/${p}/fd/${f}`));
    assert.ok(fdsOf(pid).includes(`socket:[${listening}]`), 'the daemon holds the SMTP port');
    assert.not.ok(fdsOf(helpers[0]!).includes(`socket:[${listening}]`), 'the helper holds the SMTP port');
    const st2 = await runCli(['status', '--config', site.configPath]);
    assert.match(st2.stdout, new RegExp(`^local:   written as each user by the delivery helper \\(pid ${helpers[0]}, root\\); the daemon runs as nobody$`, 'm'));
    // Still delivers after all that looking.
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${users[0]!.name}@tidemail.test`], MSG('after')), /^250 /);
    await waitFor('delivered', () => filesIn(path.join(users[0]!.home, 'Maildir', 'new')).length === 1);
  });

  test('an MDA runs as the user, with their HOME; when the daemon is killed, the helper does not outlive it', async () => {
    const [u] = makeUsers(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "mda"\nmda = ["/bin/sh", "-c", "id -u > \\"$HOME/mda-uid\\"; cat > \\"$HOME/mda-msg\\"", "{user}"]\n[queue]\nretry_min = "1h"\n`);
    const d = keep(await startDaemon(site));
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG('mda')), /^250 /);
    await waitFor('the MDA ran', () => fs.existsSync(path.join(u.home, 'mda-msg')) && /hello mda/.test(fs.readFileSync(path.join(u.home, 'mda-msg'), 'utf8')));
    assert.is(fs.readFileSync(path.join(u.home, 'mda-uid'), 'utf8').trim(), String(u.uid));
    assert.is(fs.statSync(path.join(u.home, 'mda-msg')).uid, u.uid);
    assert.match(fs.readFileSync(path.join(u.home, 'mda-msg'), 'utf8'), new RegExp(`^Return-Path: <x@remote\\.example>\nDelivered-To: ${u.name}@tidemail\\.test\n`));
    const [helper] = childrenOf(d.proc.pid!).filter((p) => /privsep[/-]helper\.c?js/.test(cmdline(p)));
    assert.ok(helper, 'a helper');
    await d.kill9();
    await waitFor('the helper gone', () => !fs.existsSync(`/proc/${helper}`) || /^State:\s+Z/m.test(fs.readFileSync(`/proc/${helper}/status`, 'utf8')), 5000);
  });

  test('SIGHUP with a changed min_uid says it needs a restart: the helper keeps the rules it was forked with', async () => {
    const [u] = makeUsers(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\nmin_uid = 1000\n[queue]\nretry_min = "1h"\n`);
    const d = keep(await startDaemon(site));
    fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('min_uid = 1000', `min_uid = ${u.uid + 1}`));
    d.proc.kill('SIGHUP');
    await d.waitForLog(/need a restart.*settings=.*local\.min_uid/);
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /need a restart.*local\.min_uid/);
    // The daemon applies the new limit at once — the user now counts as a system account, so its
    // mail would be written with the daemon's rights (which fails here, with the alias fix); the
    // helper's own limit, the one that matters if the daemon is subverted, waits for the restart.
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG('after reload')), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${u.name}@tidemail\\.test>.*below \\[local\\] min_uid ${u.uid + 1}`));
  });

  test('kill -9 of the daemon in the middle of a delivery: no partial message is left, and after the restart exactly one copy arrives', async () => {
    const [u] = makeUsers(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\n[queue]\nretry_min = "1h"\n`, { smtpToml: 'max_message_size = "200M"' });
    let d = keep(await startDaemon(site));
    const big = MSG('big') + ('y'.repeat(998) + '\r\n').repeat(64 * 1024); // 64 MB
    const reply = sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], big).catch((e: Error) => e.message);
    const tmp = path.join(u.home, 'Maildir', 'tmp');
    await waitFor('the delivery under way', () => filesIn(tmp).length > 0, 60_000, 5);
    await d.kill9();
    void reply;
    await waitFor('the unfinished tmp file removed', () => filesIn(tmp).length === 0, 10_000);
    assert.equal(filesIn(path.join(u.home, 'Maildir', 'new')), []);
    d = keep(await startDaemon(site));
    const [f] = await waitFor('delivered after the restart', () => {
      const n = filesIn(path.join(u.home, 'Maildir', 'new'));
      return n.length ? n : null;
    }, 60_000);
    assert.ok(fs.statSync(f!).size > 64 * 1024 * 999);
    assert.is(filesIn(path.join(u.home, 'Maildir', 'new')).length, 1);
    assert.is(fs.statSync(f!).uid, u.uid);
  });

  test('allow_mail_to_commands = ["alias"] and allow_mail_to_files = ["forward"] (Postfix\'s classes): a .forward pipe and an aliases file target are refused, the rest still run', async () => {
    const [u, v] = makeUsers(2) as [TestUser, TestUser];
    const out = tmpDir('tidemail-out-');
    fs.chmodSync(out, 0o777);
    writeAs(u, path.join(u.home, '.forward'), `"|id -u > ${u.home}/fwd-uid"\n`);
    writeAs(v, path.join(v.home, '.forward'), `${v.home}/saved\n`);
    const aliases = writeFile(path.join(tmpDir(), 'aliases'), `apipe: "|id -u > ${out}/alias-uid"\nafile: ${out}/alias-file\n`);
    const site = await makeSite(`[local]\naliases = "${aliases}"\nforward = true\ndelivery = "maildir"\nallow_mail_to_commands = ["alias"]\nallow_mail_to_files = ["forward"]\n[queue]\nretry_min = "1h"\n`);
    const d = keep(await startDaemon(site));
    // Both are refused at RCPT: the client reads the status (smtp/local-refusal.ts), the log why.
    const r1 = await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG('pipe'));
    assert.is(r1, `550 5.4.6 <${u.name}@tidemail.test>: local delivery failed (the reason is for the postmaster)`);
    await d.waitForLog(new RegExp(`local recipient cannot be expanded rcpt=<${u.name}@tidemail\\.test> status=5\\.4\\.6 reason=".*allow_mail_to_commands does not include`));
    const r2 = await sendMessage(site.port, 'x@remote.example', ['afile@tidemail.test'], MSG('afile'));
    assert.is(r2, '550 5.4.6 <afile@tidemail.test>: local delivery failed (the reason is for the postmaster)');
    await d.waitForLog(/local recipient cannot be expanded rcpt=<afile@tidemail\.test> status=5\.4\.6 reason=".*allow_mail_to_files does not include/);
    assert.match(await sendMessage(site.port, 'x@remote.example', ['apipe@tidemail.test'], MSG('apipe')), /^250 /);
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${v.name}@tidemail.test`], MSG('vfile')), /^250 /);
    await waitFor('the alias pipe ran', () => fs.existsSync(path.join(out, 'alias-uid')));
    await waitFor('v\'s .forward file written', () => fs.existsSync(path.join(v.home, 'saved')));
    assert.is(fs.statSync(path.join(v.home, 'saved')).uid, v.uid);
    assert.not.ok(fs.existsSync(path.join(u.home, 'fwd-uid')));
    assert.not.ok(fs.existsSync(path.join(out, 'alias-file')));
  });

  test('runq with no daemon, as root: the same helper writes each user\'s mail as them, and runq exits', async () => {
    const users = makeUsers(2);
    const site = await maildirSite([...users, ...makeUsers(1)]);
    for (const u of users) {
      const s = await runCli(['-C', site.configPath, '-f', 'x@remote.example', u.name], { argv0: 'sendmail', input: `Subject: runq ${u.name}\n\nhi\n` });
      assert.is(s.code, 0, s.stderr);
    }
    const r = await runCli(['-C', site.configPath], { argv0: 'runq', timeoutMs: 30_000 });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /queue run done; 0 message\(s\) still queued/);
    for (const u of users) {
      const [f] = filesIn(path.join(u.home, 'Maildir', 'new'));
      assert.ok(f, `mail for ${u.name}`);
      assert.is(fs.statSync(f!).uid, u.uid);
      assert.match(fs.readFileSync(f!, 'utf8'), new RegExp(`Subject: runq ${u.name}`));
    }
  });

  test('the helper killed on its own: one error line, local mail defers with 4.3.0 (kept, not bounced), status says STOPPED', async () => {
    const [u] = makeUsers(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\n[queue]\nretry_min = "1h"\n`);
    const d = keep(await startDaemon(site));
    const [helper] = childrenOf(d.proc.pid!).filter((p) => /privsep[/-]helper\.c?js/.test(cmdline(p)));
    process.kill(helper!, 'SIGKILL');
    await d.waitForLog(/error the local delivery helper stopped; deliveries to local users are deferred until tidemail is restarted how=SIGKILL/);
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG('no helper')), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${u.name}@tidemail\\.test>.*4\\.3\\.0 the local delivery helper is not running \\(SIGKILL\\); restart tidemail`));
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /^local:   delivery helper STOPPED \(SIGKILL\): local deliveries wait; restart tidemail$/m);
    assert.not.ok(fs.existsSync(path.join(u.home, 'Maildir')));
  });

  test('mbox in a spool directory (root:mail 2775, like /var/mail): each user\'s file is theirs, dotlocked, mboxrd', async () => {
    const users = makeUsers(2);
    const spool = tmpDir('tidemail-spool-');
    const mailGid = (() => {
      try {
        return Number(/^mail:[^:]*:(\d+):/m.exec(fs.readFileSync('/etc/group', 'utf8'))![1]);
      } catch {
        return null;
      }
    })();
    if (mailGid !== null) {
      fs.chownSync(spool, 0, mailGid);
      fs.chmodSync(spool, 0o2775);
    } else fs.chmodSync(spool, 0o1777);
    const site = await makeSite(`[local]\ndelivery = "mbox"\nmbox = "${spool}/%u"\n[queue]\nretry_min = "1h"\n`);
    keep(await startDaemon(site));
    for (const u of users) {
      assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG(`mbox ${u.name}`) + 'From here on\r\n'), /^250 /);
      const r = await runCli(['-C', site.configPath, '-f', 'x@remote.example', u.name], { argv0: 'sendmail', input: `Subject: sendmail ${u.name}\n\nhi\n` });
      assert.is(r.code, 0, r.stderr);
    }
    for (const u of users) {
      const f = path.join(spool, u.name);
      await waitFor(`2 messages in ${f}`, () => fs.existsSync(f) && (fs.readFileSync(f, 'utf8').match(/^From /gm) ?? []).length === 2, 20_000);
      const st = fs.statSync(f);
      assert.is(st.uid, u.uid);
      assert.is(st.mode & 0o777, 0o600);
      assert.match(fs.readFileSync(f, 'utf8'), /^>From here on$/m);
      // The lock goes after the message is written and synced: the text can be seen first.
      await waitFor(`the dotlock of ${f} removed`, () => !fs.existsSync(`${f}.lock`), 5000);
    }
  });
}

test('allow_mail_to_commands with a name that is not a Postfix class is a config error with the fix (exit 78)', async () => {
  const site = await makeSite(`[local]\nallow_mail_to_commands = ["alias", "everyone"]\n`);
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  assert.is(r.code, 78, r.stdout + r.stderr);
  assert.match(r.stderr + r.stdout, /allow_mail_to_commands.*names "everyone", which is not "alias", "include" or "forward"/);
  assert.match(r.stderr + r.stdout, /fix: write e\.g\. allow_mail_to_commands = \["alias", "forward"\]/);
  assert.not.match(r.stderr, /\n\s+at /);
});

test.run();
