// What users can plant against local delivery (root only: real users made here, issue 16):
// symbolic and hard links on Maildir and mbox paths and on the dotlock, a home owned by someone
// else, a user removed while their mail waits, a full disk. Each one gets a clear log line and a
// temporary (or, for the removed user, permanent) failure, and nothing is written where it
// should not be.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { fillDisk, freeDisk } from '../helpers/disk.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { filesIn, makeUsers, removeUser, removeUsers, writeAs, type TestUser } from '../helpers/system-users.js';
import { isRoot, tmpDir } from '../helpers/tmp.js';

// Before stopAfterEach's own after hook, which removes the temp dirs the mounts are in.
const mounts: string[] = [];
test.after(() => {
  for (const m of mounts.splice(0)) execFileSync('umount', ['-l', m]);
  removeUsers();
});
const keep = stopAfterEach(test);

const MSG = 'From: x@remote.example\r\nSubject: t\r\n\r\nhello\r\n';
const send = (site: TestSite, u: TestUser) => sendMessage(site.port, 'x@remote.example', [`${u.name}@tidemail.test`], MSG);
const flush = (site: TestSite) => runCli(['queue', 'flush', '--config', site.configPath]);
const QUEUE = '[queue]\nretry_min = "1h"\n';

function spoolDir(): string {
  const spool = tmpDir('tidemail-spool-');
  fs.chmodSync(spool, 0o1777); // the shared spool an attacker can write into
  return spool;
}

/** The attacker's own file, readable and writable by all, with known content. */
function bait(attacker: TestUser, name = 'bait'): string {
  return writeAs(attacker, path.join(attacker.home, name), 'untouched\n', 0o666);
}

if (!isRoot()) {
  test.skip('attacks on local delivery (need root to create users)', () => undefined);
} else {
  test('a ~/Maildir that is a symbolic link (to another user\'s Maildir) is refused, nothing written there', async () => {
    const [a, b] = makeUsers(2) as [TestUser, TestUser];
    fs.mkdirSync(path.join(b.home, 'Maildir', 'new'), { recursive: true });
    fs.chmodSync(b.home, 0o755);
    execFileSync('chown', ['-R', `${b.uid}:${b.gid}`, path.join(b.home, 'Maildir')]);
    fs.chmodSync(path.join(b.home, 'Maildir'), 0o777);
    fs.chmodSync(path.join(b.home, 'Maildir', 'new'), 0o777);
    fs.symlinkSync(path.join(b.home, 'Maildir'), path.join(a.home, 'Maildir'));
    fs.lchownSync(path.join(a.home, 'Maildir'), a.uid, a.gid);
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, a), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${a.name}@tidemail\\.test>.*symbolic link not owned by root`));
    assert.equal(filesIn(path.join(b.home, 'Maildir', 'new')), []);
    assert.equal(fs.readdirSync(path.join(b.home, 'Maildir')).sort(), ['new']);
  });

  test('mbox: a spool file planted as a symbolic link, a hard link, or a file of someone else\'s is refused; the attacker\'s file is untouched', async () => {
    const [a, b, c, mallory] = makeUsers(4) as [TestUser, TestUser, TestUser, TestUser];
    const spool = spoolDir();
    const target = bait(mallory);
    fs.symlinkSync(target, path.join(spool, a.name));
    fs.lchownSync(path.join(spool, a.name), mallory.uid, mallory.gid);
    const hard = bait(mallory, 'hard');
    fs.linkSync(hard, path.join(spool, b.name));
    writeAs(mallory, path.join(spool, c.name), '', 0o666);
    const site = await makeSite(`[local]\ndelivery = "mbox"\nmbox = "${spool}/%u"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    for (const u of [a, b, c]) assert.match(await send(site, u), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${a.name}@tidemail\\.test>.*is a symbolic link`));
    await d.waitForLog(new RegExp(`deferred to=<${b.name}@tidemail\\.test>.*has 2 hard links`));
    await d.waitForLog(new RegExp(`deferred to=<${c.name}@tidemail\\.test>.*is owned by uid ${mallory.uid}, not by ${c.name}.*fix: move it aside`));
    assert.is(fs.readFileSync(target, 'utf8'), 'untouched\n');
    assert.is(fs.readFileSync(hard, 'utf8'), 'untouched\n');
    assert.is(fs.readFileSync(path.join(spool, c.name), 'utf8'), '');
  });

  test('mbox: a dotlock planted as a symbolic link is never followed: deferred at once with the fix; removed, the mail is delivered', async () => {
    const [a, mallory] = makeUsers(2) as [TestUser, TestUser];
    const spool = spoolDir();
    const target = bait(mallory);
    const lock = path.join(spool, `${a.name}.lock`);
    fs.symlinkSync(target, lock);
    fs.lchownSync(lock, mallory.uid, mallory.gid);
    const site = await makeSite(`[local]\ndelivery = "mbox"\nmbox = "${spool}/%u"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, a), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${a.name}@tidemail\\.test>.*${a.name}\\.lock is a symbolic link, not a lock; fix: remove it`));
    assert.is(fs.readFileSync(target, 'utf8'), 'untouched\n');
    assert.not.ok(fs.existsSync(path.join(spool, a.name)));
    fs.rmSync(lock);
    await flush(site);
    await d.waitForLog(new RegExp(`delivered to=<${a.name}@tidemail\\.test>`));
    assert.is(fs.readFileSync(target, 'utf8'), 'untouched\n');
    assert.is(fs.statSync(path.join(spool, a.name)).uid, a.uid);
  });

  test('a home owned by someone else defers with the fix; once the user is removed, the waiting mail bounces 5.1.1', async () => {
    const [a, b] = makeUsers(2) as [TestUser, TestUser];
    fs.chownSync(a.home, b.uid, b.gid);
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    let d = keep(await startDaemon(site));
    assert.match(await send(site, a), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${a.name}@tidemail\\.test>.*home directory ${a.home} is owned by uid ${b.uid}, not by ${a.name}.*fix: chown ${a.name} ${a.home}`));
    assert.not.ok(fs.existsSync(path.join(a.home, 'Maildir')));
    // Removed while the mail waits: the helper, which looks the user up itself, refuses at once
    // (the daemon's 30 s user cache may still know the name)…
    removeUser(a.name);
    await flush(site);
    await d.waitForLog(/delivery helper refused: no user .* in passwd|550 5\.1\.1|no such user/);
    assert.not.ok(fs.existsSync(path.join(a.home, 'Maildir')));
    // …and a fresh lookup bounces it, as Postfix's "unknown user".
    await d.stop();
    d = keep(await startDaemon(site));
    await flush(site);
    await d.waitForLog(new RegExp(`bounced to=<${a.name}@tidemail\\.test>.*5\\.1\\.1`));
    assert.not.ok(fs.existsSync(path.join(a.home, 'Maildir')));
  });

  test('a system account (uid below min_uid) is never written as itself: deferred with the alias fix, nothing in its home', async () => {
    const [sys] = makeUsers(1, { system: true, prefix: 'ts' }) as [TestUser];
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, sys), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${sys.name}@tidemail\\.test>.*EACCES.*${sys.name} is root or a system account \\(uid ${sys.uid}, below \\[local\\] min_uid 1000\\).*fix: alias ${sys.name} to a person`));
    assert.not.ok(fs.existsSync(path.join(sys.home, 'Maildir')));
  });

  test('.forward files: one in the home is appended as its owner; one outside the home is refused with 5.7.1', async () => {
    const [inside, outside] = makeUsers(2) as [TestUser, TestUser];
    const elsewhere = tmpDir('tidemail-elsewhere-');
    fs.chmodSync(elsewhere, 0o777);
    writeAs(inside, path.join(inside.home, '.forward'), `${inside.home}/saved\n`);
    writeAs(outside, path.join(outside.home, '.forward'), `${elsewhere}/saved\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, inside), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${inside.name}@tidemail\\.test>`));
    assert.is(fs.statSync(path.join(inside.home, 'saved')).uid, inside.uid);
    assert.match(fs.readFileSync(path.join(inside.home, 'saved'), 'utf8'), /^From x@remote\.example /);
    // The client reads the status (smtp/local-refusal.ts); why and the fix are the log's.
    assert.is(await send(site, outside), '550 5.7.1 local delivery failed (the reason is for the postmaster)');
    await d.waitForLog(new RegExp(`refused in session to=<${outside.name}@tidemail\\.test> result="5\\.7\\.1 [^"]*outside [^"]*aliases file`));
    assert.equal(fs.readdirSync(elsewhere), []);
  });

  test('a .forward file target that climbs out of the home with ".." is refused with 5.7.1 at once, not retried', async () => {
    const [climber, victim] = makeUsers(2) as [TestUser, TestUser];
    fs.chmodSync(victim.home, 0o777); // writable by all: only the path rule may stop the write
    const target = `${climber.home}/../${path.basename(victim.home)}/saved`;
    writeAs(climber, path.join(climber.home, '.forward'), `${target}\n`);
    const site = await makeSite(`[local]\ndelivery = "maildir"\nforward = true\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.is(await send(site, climber), '550 5.7.1 local delivery failed (the reason is for the postmaster)');
    await d.waitForLog(new RegExp(`refused in session to=<${climber.name}@tidemail\\.test> result="5\\.7\\.1 [^"]*not a plain path`));
    assert.not.ok(fs.existsSync(path.join(victim.home, 'saved')));
  });

  test('a home that is root\'s symbolic link (/home/x -> /data/x) is followed; one that is the user\'s own link is refused', async () => {
    const [a, b] = makeUsers(2) as [TestUser, TestUser];
    const links = tmpDir('tidemail-links-');
    for (const u of [a, b]) {
      const link = path.join(links, u.name);
      fs.symlinkSync(u.home, link);
      if (u === b) fs.lchownSync(link, b.uid, b.gid);
      execFileSync('usermod', ['-d', link, u.name]);
    }
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, a), /^250 /);
    await d.waitForLog(new RegExp(`delivered to=<${a.name}@tidemail\\.test>`));
    assert.is(filesIn(path.join(a.home, 'Maildir', 'new')).length, 1);
    assert.match(await send(site, b), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${b.name}@tidemail\\.test>.*home .*${b.name} of ${b.name} is a symbolic link owned by uid ${b.uid}, not by root.*fix: make the home a real directory`));
    assert.not.ok(fs.existsSync(path.join(b.home, 'Maildir')));
  });

  test('a full disk under ~/Maildir defers (4.3.1) leaving nothing in tmp/ or new/; freed, the mail arrives', async () => {
    const [a] = makeUsers(1) as [TestUser];
    const mount = path.join(a.home, 'Maildir');
    fs.mkdirSync(mount);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=256k,mode=0700,uid=${a.uid},gid=${a.gid}`, 'tidemail-test', mount]);
    mounts.push(mount);
    for (const s of ['cur', 'new', 'tmp']) {
      fs.mkdirSync(path.join(mount, s), { mode: 0o700 });
      fs.chownSync(path.join(mount, s), a.uid, a.gid);
    }
    fillDisk(path.join(mount, 'x')); // the filler sits in the Maildir itself
    const site = await makeSite(`[local]\ndelivery = "maildir"\n${QUEUE}`);
    const d = keep(await startDaemon(site));
    assert.match(await send(site, a), /^250 /);
    await d.waitForLog(new RegExp(`deferred to=<${a.name}@tidemail\\.test>.*4\\.3\\.1 .*ENOSPC`));
    assert.equal(filesIn(path.join(mount, 'new')), []);
    assert.equal(filesIn(path.join(mount, 'tmp')), []);
    freeDisk(path.join(mount, 'x'));
    await flush(site);
    await d.waitForLog(new RegExp(`delivered to=<${a.name}@tidemail\\.test>`));
    const [f] = filesIn(path.join(mount, 'new'));
    assert.is(fs.statSync(f!).uid, a.uid);
  });
}

test.run();
