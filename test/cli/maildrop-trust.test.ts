// The maildrop is writable by every local user, so the daemon must treat what it finds there as
// hostile: links, FIFOs, directory trees and hand-written files claiming any sender. Runs as root
// (to act as two ordinary users: uid 1 `daemon`, uid 2 `bin`) against the real daemon.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite, BIN } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

const U1 = 1; // Debian's "daemon": an ordinary user here
const U2 = 2; // "bin": the victim

let seq = 0;
const uniq = (tag: string) => `${tag}-${process.pid}-${++seq}@remote.example`;

/** A file in maildrop format: message, envelope JSON line, its length in 10 digits. */
function maildropBytes(message: string, env: Record<string, unknown>): Buffer {
  const json = JSON.stringify({ v: 1, via: 'sendmail', created: Date.now(), ...env }) + '\n';
  return Buffer.from(message.replace(/\r?\n/g, '\r\n') + json + String(Buffer.byteLength(json)).padStart(10, '0') + '\n');
}

let sh: Smarthost;
let site: TestSite;
let d: RunningDaemon;
const dropDir = (s: TestSite = site) => path.join(s.stateDir, 'maildrop');

/** Root's sendmail pokes the daemon (ordinary users only get inotify): a message to wait for. */
async function sentinel(s: TestSite = site, smart: Smarthost = sh): Promise<void> {
  const rcpt = uniq('sentinel');
  const r = await runCli(['-C', s.configPath, rcpt], { argv0: 'sendmail', input: 'Subject: sentinel\n\nx\n' });
  assert.is(r.code, 0, r.stderr);
  await waitFor(`sentinel ${rcpt}`, () => smart.messages.find((m) => m.to.includes(rcpt)));
}

/** Runs a shell command as an ordinary user. */
const asUser = (uid: number, script: string, cwd?: string) => execFileSync('sh', ['-c', script], { uid, gid: uid, cwd, stdio: ['ignore', 'pipe', 'pipe'] });

if (!isRoot()) {
  test.skip('maildrop trust (needs root to act as two local users)', () => undefined);
} else {
  test.before(async () => {
    sh = await startSmarthost();
    site = await makeSite();
    site.route('isp', smarthostRoute(sh.port));
    d = await startDaemon(site);
  });
  test.after(async () => {
    await d?.stop();
    await sh?.close();
    cleanupTmp();
  });

  test('a symlink to another user\'s file is not followed: refused, logged, removed; the victim file is untouched', async () => {
    const rcpt = uniq('stolen');
    const victimDir = tmpDir();
    const victim = path.join(victimDir, 'mbox');
    fs.writeFileSync(victim, maildropBytes('Subject: secret\n\nthe victim\'s mail\n', { sender: 'bin@tidemail.test', recipients: [rcpt], uid: U2 }), { mode: 0o600 });
    fs.chownSync(victim, U2, U2);
    const before = fs.readFileSync(victim);
    const mtime = fs.statSync(victim).mtimeMs;
    asUser(U1, `ln -s ${victim} ${dropDir()}/0000000000000000000000a1`);
    await sentinel();
    await d.waitForLog(/maildrop: refused.*0000000000000000000000a1.*symbolic link/);
    assert.not.ok(sh.messages.some((m) => m.to.includes(rcpt)), 'the linked file was delivered');
    assert.not.ok(fs.existsSync(path.join(dropDir(), '0000000000000000000000a1')));
    assert.ok(fs.readFileSync(victim).equals(before));
    assert.is(fs.statSync(victim).mtimeMs, mtime);
  });

  test('a hard link (link count 2) is refused; the other name keeps its content', async () => {
    const rcpt = uniq('hardlink');
    const own = path.join(tmpDir(), 'msg');
    fs.chmodSync(path.dirname(own), 0o777);
    asUser(U1, `cat > ${own}`);
    fs.writeFileSync(own, maildropBytes('Subject: linked\n\nx\n', { sender: 'daemon@tidemail.test', recipients: [rcpt], uid: U1 }));
    asUser(U1, `ln ${own} ${dropDir()}/0000000000000000000000a2`);
    await sentinel();
    await d.waitForLog(/maildrop: refused.*0000000000000000000000a2.*links/);
    assert.not.ok(sh.messages.some((m) => m.to.includes(rcpt)));
    assert.ok(fs.existsSync(own));
    assert.is(fs.statSync(own).nlink, 1);
  });

  test('a hand-written file claiming another sender and via=bounce: sender rewritten, X-Authentication-Warning, Received from userid 1', async () => {
    const rcpt = uniq('forged');
    // Written elsewhere and moved in whole, as a careful forger would (no half-written file).
    const file = path.join(tmpDir(), '0000000000000000000000a3');
    fs.chmodSync(path.dirname(file), 0o777);
    fs.writeFileSync(file, maildropBytes('Received: by bank.example (forged trace)\nFrom: boss@bank.example\nSubject: pay\n\nx\n', { sender: 'boss@bank.example', recipients: [rcpt], via: 'bounce', uid: 0 }));
    fs.chownSync(file, U1, U1);
    asUser(U1, `mv ${file} ${dropDir()}/`);
    await sentinel();
    const m = await waitFor('forged message', () => sh.messages.find((x) => x.to.includes(rcpt)));
    assert.is(m.from, 'daemon@tidemail.test');
    const text = m.raw.toString('utf8');
    const head = text.slice(0, text.indexOf('\r\n\r\n') + 2);
    assert.match(head, /^Received: by tidemail\.test \(tidemail pickup, from userid 1\)/);
    assert.match(head, /\r\nX-Authentication-Warning: tidemail\.test: daemon set sender to boss@bank\.example using -f\r\n/);
    assert.match(d.logs(), /maildrop: sender not allowed for this user; rewritten.*uid=1/);
    assert.match(d.logs(), /accepted.*via=sendmail.*uid=1/);
  });

  test('the caller\'s own address, and any address from root, go through unchanged', async () => {
    const mine = uniq('mine');
    const r = await runCli(['-C', site.configPath, '-f', 'daemon@localhost', mine], { argv0: 'sendmail', input: 'Subject: own\n\nx\n', uid: U1, gid: U1 });
    assert.is(r.code, 0, r.stderr);
    const m = await waitFor('own', () => sh.messages.find((x) => x.to.includes(mine)));
    assert.is(m.from, 'daemon@localhost');
    assert.not.match(m.raw.toString(), /X-Authentication-Warning/);
    const root = uniq('root');
    const r2 = await runCli(['-C', site.configPath, '-f', 'anyone@elsewhere.example', root], { argv0: 'sendmail', input: 'Subject: root\n\nx\n' });
    assert.is(r2.code, 0, r2.stderr);
    const m2 = await waitFor('root', () => sh.messages.find((x) => x.to.includes(root)));
    assert.is(m2.from, 'anyone@elsewhere.example');
    assert.match(m2.raw.toString(), /from userid 0\)/);
  });

  test('a user listed in trusted_users keeps the sender it sets; an invalid entry is a config error naming file:line', async () => {
    const s = await makeSite('trusted_users = ["daemon"]');
    s.route('isp', smarthostRoute(sh.port));
    const d2 = await startDaemon(s);
    try {
      const rcpt = uniq('trusted');
      const r = await runCli(['-C', s.configPath, '-f', 'list-owner@lists.example', rcpt], { argv0: 'sendmail', input: 'Subject: list\n\nx\n', uid: U1, gid: U1 });
      assert.is(r.code, 0, r.stderr);
      const m = await waitFor('trusted', () => sh.messages.find((x) => x.to.includes(rcpt)));
      assert.is(m.from, 'list-owner@lists.example');
      assert.not.match(m.raw.toString(), /X-Authentication-Warning/);
    } finally {
      await d2.stop();
    }
    const bad = await makeSite('trusted_users = ["ok", "bad name"]');
    const c = await runCli(['-C', bad.configPath, uniq('x')], { argv0: 'sendmail', input: 'x\n' });
    assert.is(c.code, 78, c.stderr);
    assert.match(c.stderr, /tidemail\.toml:\d+.*trusted_users.*"bad name" is not a login name/);
  });

  test('sendmail under umask 077 still leaves a file the daemon can read', async () => {
    const rcpt = uniq('umask');
    const r = spawnSync('sh', ['-c', `umask 077; exec "$0" "$1" sendmail -C "$2" "$3"`, process.execPath, BIN, site.configPath, rcpt], { uid: U1, gid: U1, input: 'Subject: umask\n\nx\n', encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    await waitFor('umask message', () => sh.messages.find((x) => x.to.includes(rcpt)));
  });

  test('sendmail refuses a message over max_message_size: EX_DATAERR (65), clear message, nothing queued', async () => {
    const s = await makeSite('', { smtpToml: 'max_message_size = "1M"' });
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    const big = 'Subject: big\n\n' + ('x'.repeat(76) + '\n').repeat(30_000); // ~2.3 MB
    const r = await runCli(['-C', s.configPath, uniq('big')], { argv0: 'sendmail', input: big, uid: U1, gid: U1 });
    assert.is(r.code, 65, r.stderr);
    assert.match(r.stderr, /^sendmail: message too big: .*1 MiB.*max_message_size/m);
    assert.not.match(r.stderr, /\n\s+at /);
    assert.equal(fs.readdirSync(dropDir(s)), []);
  });

  test('the pickup enforces max_message_size on hand-written files: refused, logged, removed', async () => {
    const s = await makeSite('', { smtpToml: 'max_message_size = "1K"' });
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    const file = path.join(dropDir(s), '0000000000000000000000a4');
    fs.writeFileSync(file, maildropBytes('Subject: huge\n\n' + 'y'.repeat(4000) + '\n', { sender: 'daemon@tidemail.test', recipients: [uniq('huge')], uid: U1 }));
    fs.chownSync(file, U1, U1);
    const d2 = await startDaemon(s);
    try {
      await d2.waitForLog(/maildrop: refused.*0000000000000000000000a4.*max_message_size/);
      await waitFor('file removed', () => !fs.existsSync(file));
    } finally {
      await d2.stop();
    }
  });

  test('a FIFO in the maildrop hangs neither the pickup, nor SIGTERM, nor the next start', async () => {
    const s = await makeSite();
    s.route('isp', smarthostRoute(sh.port));
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    asUser(U1, `mkfifo ${dropDir(s)}/0000000000000000000000a5`);
    let d2 = await startDaemon(s);
    await sentinel(s);
    const t0 = Date.now();
    assert.is(await d2.stop(), 0);
    assert.ok(Date.now() - t0 < 5000, `stop took ${Date.now() - t0} ms`);
    d2 = await startDaemon(s); // a second start with whatever the first one left
    await sentinel(s);
    await d2.stop();
  });

  test('a 2000-level directory tree in the maildrop does not break the start and is not walked', async () => {
    const s = await makeSite();
    s.route('isp', smarthostRoute(sh.port));
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    // mkdir+chdir in a loop (relative, as a shell's cd would not go past PATH_MAX): a 12 KB path.
    const script = "const fs = require('fs'); fs.mkdirSync('0000000000000000000000a6'); process.chdir('0000000000000000000000a6'); for (let i = 0; i < 2000; i++) { fs.mkdirSync('level'); process.chdir('level'); }";
    execFileSync(process.execPath, ['-e', script], { uid: U1, gid: U1, cwd: dropDir(s) });
    try {
      const d2 = await startDaemon(s);
      await sentinel(s);
      await d2.waitForLog(/maildrop: refused.*0000000000000000000000a6.*directory/);
      await d2.stop();
      // Nothing in the user's tree was given to the daemon's user.
      const top = fs.readdirSync(dropDir(s)).find((n) => n.includes('0000000000000000000000a6'))!;
      assert.is(fs.statSync(path.join(dropDir(s), top, 'level')).uid, U1);
    } finally {
      spawnSync('rm', ['-rf', dropDir(s)]);
    }
  });

  test('an ordinary user\'s sendmail makes the new maildrop entry durable before exiting 0', async () => {
    if (spawnSync('strace', ['-V']).status !== 0) return void console.log('  (skipped: no strace)');
    const s = await makeSite();
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    const trace = path.join(tmpDir(), 'trace');
    fs.chmodSync(path.dirname(trace), 0o777);
    const r = spawnSync('strace', ['-f', '-o', trace, '-e', 'trace=rename,renameat,renameat2,fsync,fdatasync,syncfs,sync', process.execPath, BIN, 'sendmail', '-C', s.configPath, uniq('durable')],
      { uid: U1, gid: U1, input: 'Subject: durable\n\nx\n', encoding: 'utf8' });
    assert.is(r.status, 0, r.stderr);
    const lines = fs.readFileSync(trace, 'utf8').split('\n');
    const renamed = lines.findIndex((l) => /rename.*maildrop\/\.tmp-/.test(l) && / = 0$/.test(l));
    assert.ok(renamed >= 0, 'no rename seen');
    // After the rename: a successful syncfs() or sync() (the directory itself is not readable).
    assert.ok(lines.slice(renamed + 1).some((l) => /\b(syncfs|sync)\(.*\) += 0$/.test(l)), lines.slice(renamed).join('\n'));
  });

  test('a read-only state dir: EX_TEMPFAIL (75) with a clear message, no stack trace', async () => {
    const s = await makeSite();
    fs.mkdirSync(dropDir(s), { recursive: true });
    fs.chmodSync(dropDir(s), 0o1733);
    // A read-only bind mount in a private mount namespace: a real EROFS, as after a remount,ro.
    const script = `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec setpriv --reuid=${U1} --regid=${U1} --clear-groups "$2" "$3" sendmail -C "$4" "$5"`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', script, 'sh', s.stateDir, process.execPath, BIN, s.configPath, uniq('rofs')], { input: 'Subject: ro\n\nx\n', encoding: 'utf8' });
    if (/unshare failed|Operation not permitted/.test(r.stderr ?? '')) return void console.log('  (skipped: no mount namespaces)');
    assert.is(r.status, 75, r.stderr);
    assert.match(r.stderr, /^sendmail: cannot queue the message: .*read-only/m);
    assert.not.match(r.stderr, /\n\s+at /);
  });
}

test.run();
