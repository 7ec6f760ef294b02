// `tidemail check` says which local users can receive and why not, and a daemon started without
// root says once at start that only its own user gets mail — and the error for another user's
// mail says what to do (issue 16). Real users made here (root only).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, makeSite, runCli } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { filesIn, makeUsers, removeUsers, type TestUser } from '../helpers/system-users.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => {
  removeUsers();
  cleanupTmp();
});

const line = (out: string, re: RegExp) => out.split('\n').find((l) => re.test(l)) ?? '';

if (!isRoot()) {
  test.skip('check and non-root start with real users (need root to create them)', () => undefined);
} else {
  test('check as root: one line per user — who can receive (written as them), who cannot and the fix; root\'s alias', async () => {
    const [good, foreign, gone, linked] = makeUsers(4) as [TestUser, TestUser, TestUser, TestUser];
    fs.chownSync(foreign.home, good.uid, good.gid);
    fs.rmSync(gone.home, { recursive: true });
    fs.symlinkSync('/tmp', path.join(linked.home, 'Maildir'));
    fs.lchownSync(path.join(linked.home, 'Maildir'), linked.uid, linked.gid);
    const aliases = writeFile(path.join(tmpDir(), 'aliases'), `root: ${good.name}\n`);
    const site = await makeSite(`[local]\naliases = "${aliases}"\ndelivery = "maildir"\n`);
    const r = await runCli(['check', '--config', site.configPath]);
    const out = r.stdout;
    assert.match(line(out, new RegExp(`${good.name} \\(uid`)), new RegExp(`^OK\\s+local users\\s+${good.name} \\(uid ${good.uid}\\): ${good.home}/Maildir, written as ${good.name}$`));
    assert.match(out, new RegExp(`WARN\\s+local users\\s+${foreign.name} \\(uid ${foreign.uid}\\) cannot receive: home ${foreign.home} is owned by uid ${good.uid}, not by ${foreign.name}\\n\\s+fix: chown ${foreign.name} ${foreign.home}`));
    assert.match(out, new RegExp(`WARN\\s+local users\\s+${gone.name} .*cannot receive: home ${gone.home} does not exist\\n\\s+fix: create it`));
    assert.match(out, new RegExp(`WARN\\s+local users\\s+${linked.name} .*cannot receive: ${linked.home}/Maildir is a symbolic link not owned by root`));
    assert.match(out, new RegExp(`OK\\s+local users\\s+root → ${good.name}`));
    assert.not.match(out + r.stderr, /\n\s+at /);
  });

  test('without root: the daemon says once that only its user gets mail; its own mail arrives, another user\'s waits with the fix; check says the same', async () => {
    const [me, other] = makeUsers(2) as [TestUser, TestUser];
    const state = path.join(me.home, 'state');
    const site = await makeSite(`[local]\ndelivery = "maildir"\n[queue]\nretry_min = "1h"\n`, { stateDir: state });
    fs.chmodSync(me.home, 0o755); // the daemon (me) reads its config under /tmp; its home is its own
    const proc = spawn(process.execPath, [BIN, 'daemon', '--config', site.configPath], { uid: me.uid, gid: me.gid, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, HOME: me.home } });
    let log = '';
    proc.stdout.on('data', (d) => (log += d));
    proc.stderr.on('data', (d) => (log += d));
    try {
      await waitFor('daemon ready', () => /daemon ready/.test(log) || proc.exitCode !== null, 15_000);
      assert.ok(proc.exitCode === null, log);
      assert.is(log.match(/not started as root/g)?.length, 1, log);
      assert.match(log, new RegExp(`not started as root: local delivery writes with this user's rights, so only its own mailbox gets mail user=${me.name}`));
      assert.match(await sendMessage(site.port, 'x@remote.example', [`${me.name}@tidemail.test`], 'Subject: mine\r\n\r\nx\r\n'), /^250 /);
      await waitFor('own mail delivered', () => filesIn(path.join(me.home, 'Maildir', 'new')).length === 1);
      assert.match(await sendMessage(site.port, 'x@remote.example', [`${other.name}@tidemail.test`], 'Subject: theirs\r\n\r\nx\r\n'), /^250 /);
      await waitFor('deferred with the fix', () => new RegExp(`deferred to=<${other.name}@tidemail\\.test>.*EACCES.*tidemail runs as ${me.name} without root.*fix: start the daemon as root`).test(log), 10_000);
      assert.not.ok(fs.existsSync(path.join(other.home, 'Maildir')));
      assert.is(log.match(/not started as root/g)?.length, 1, 'said once');
      const st = await runCli(['status', '--config', site.configPath], { uid: me.uid, gid: me.gid, env: { HOME: me.home } });
      assert.match(st.stdout, new RegExp(`^local:   written as ${me.name} only: the daemon was not started as root`, 'm'));
    } finally {
      proc.kill('SIGTERM');
    }
    const c = await runCli(['check', '--config', site.configPath], { uid: me.uid, gid: me.gid, env: { HOME: me.home } });
    assert.match(c.stdout, new RegExp(`WARN\\s+local users\\s+checked as ${me.name}, not root: a daemon started like this delivers only to ${me.name}`));
    assert.match(c.stdout, new RegExp(`OK\\s+local users\\s+${me.name} \\(uid ${me.uid}\\)`));
    assert.not.match(c.stdout, new RegExp(`${other.name} \\(uid`));
  });
}

test.run();
