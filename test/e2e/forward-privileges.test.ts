// Whose rights a ~/.forward pipe or file runs with. A pipe or file in a user's ~/.forward runs
// only when the delivering process already is that user; otherwise it is refused (5.7.1) and
// never runs as root or as the daemon's user; an SMTP client refused for it reads only the
// status (why and the fix are in the log). runq without a daemon gives up root like the
// daemon does. Users come from a passwd-format file ([local] passwd_file) with temp homes, so
// nothing depends on real accounts beyond uid 1 and nobody.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
const FOREIGN_UID = 1; // Debian's "daemon": neither root nor the daemon's run user (nobody)
const runUid = () => (isRoot() ? Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim()) : process.getuid!());
const runGid = () => (isRoot() ? Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim()) : process.getgid!());

interface Setup {
  site: TestSite;
  out: string;
  mail: string;
}

/** A home owned by `uid` holding a .forward (owned by `uid`, 0644) with `lines`. */
function home(name: string, uid: number, gid: number, lines: string[]): string {
  const h = tmpDir(`tidemail-home-${name}-`);
  writeFile(path.join(h, '.forward'), lines.join('\n') + '\n');
  if (isRoot()) {
    fs.chownSync(h, uid, gid);
    fs.chownSync(path.join(h, '.forward'), uid, gid);
  }
  return h;
}

/**
 * alice (uid 1) pipes and appends from her .forward; own (the daemon's uid) pipes from his;
 * the root-owned aliases file has a pipe too. Every pipe writes `id -u` under `out`.
 */
async function setup(): Promise<Setup> {
  const out = tmpDir('tidemail-out-');
  fs.chmodSync(out, 0o777);
  const mail = tmpDir('tidemail-mail-');
  fs.chmodSync(mail, 0o777);
  const alice = home('alice', FOREIGN_UID, FOREIGN_UID, [`"|id -u > ${out}/alice-uid"`, `${out}/alice-file`]);
  const own = home('own', runUid(), runGid(), [`"|id -u > ${out}/own-uid"`]);
  const passwd = writeFile(path.join(tmpDir(), 'passwd'), `alice:x:${FOREIGN_UID}:${FOREIGN_UID}:Alice:${alice}:/bin/sh\nown:x:${runUid()}:${runGid()}:Own:${own}:/bin/sh\n`);
  const aliases = writeFile(path.join(tmpDir(), 'aliases'), `aliaspipe: "|id -u > ${out}/alias-uid"\n`);
  const site = await makeSite(`[local]\naliases = "${aliases}"\nforward = true\npasswd_file = "${passwd}"\ndelivery = "maildir"\nmaildir = "${mail}/%u"\n[queue]\nretry_min = "1h"\n`);
  return { site, out, mail };
}

const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8').trim() : null);

if (!isRoot()) {
  test.skip('runq as root and foreign users\' .forward files (need root to own files as others)', () => undefined);
} else {
  test('runq as root with the daemon stopped: no .forward pipe or file runs as root; the aliases pipe runs as the run user', async () => {
    const { site, out } = await setup();
    const s = await runCli(['-C', site.configPath, 'alice', 'aliaspipe'], { argv0: 'sendmail', input: 'Subject: x\n\nx\n' });
    assert.is(s.code, 0, s.stderr);
    const r = await runCli(['-C', site.configPath], { argv0: 'runq' });
    assert.is(r.code, 0, r.stderr);
    assert.not.match(r.stderr, /\n\s+at /, 'a stack trace');
    // The aliases file is root's: its pipe runs, with the daemon user's rights, never root's.
    assert.is(read(`${out}/alias-uid`), String(runUid()));
    // alice's pipe and file would run as nobody (not alice): refused, and said why.
    assert.is(read(`${out}/alice-uid`), null, 'alice\'s .forward pipe ran');
    assert.not.ok(fs.existsSync(`${out}/alice-file`), 'alice\'s .forward file was written');
    assert.match(r.stderr, /bounced to=<alice@tidemail\.test> route=local result="5\.7\.1 .*~alice\/\.forward .*runs as nobody/, r.stderr);
    // The state dir stays the run user's: a later daemon can use it.
    assert.is(fs.statSync(path.join(site.stateDir, 'queue.sqlite')).uid, runUid());
    const d = keep(await startDaemon(site));
    void d;
  });

  test('the daemon (running as nobody) refuses a foreign user\'s .forward pipe with a 5.7.1: the client gets the status, the log says why and what to do', async () => {
    const { site, out } = await setup();
    const d = keep(await startDaemon(site));
    const reply = await sendMessage(site.port, 'x@remote.example', ['alice@tidemail.test'], 'Subject: x\r\n\r\nx\r\n');
    // The client (a stranger here) reads what a DSN would say; alice's .forward is hers.
    assert.is(reply, '550 5.7.1 local delivery failed (the reason is for the postmaster)');
    const why = /refused in session +to=<alice@tidemail\.test> result="5\.7\.1 [^"]*~alice\/\.forward[^"]*aliases file/;
    await d.waitForLog(why);
    const [, msgid] = /([0-9A-F]{16}): accepted from=<x@remote\.example>/.exec(d.logs())!;
    // Root's `tidemail log` has it too (the history is written just after the log line).
    const root = async () => (await runCli(['log', msgid!, '--config', site.configPath])).stdout;
    await waitFor('the reason in root\'s tidemail log', async () => why.test(await root()));
    assert.is(read(`${out}/alice-uid`), null);
    assert.not.ok(fs.existsSync(`${out}/alice-file`));
  });
}

test('a .forward pipe of the daemon\'s own user runs, as that user', async () => {
  const { site, out } = await setup();
  keep(await startDaemon(site));
  assert.match(await sendMessage(site.port, 'x@remote.example', ['own@tidemail.test'], 'Subject: x\r\n\r\nx\r\n'), /^250 /);
  assert.is(read(`${out}/own-uid`), String(runUid()));
});

test.run();
