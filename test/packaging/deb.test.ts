// The Debian package: built with packaging/debian/build.sh, inspected with dpkg-deb and lintian,
// then installed with apt into an overlay of this very machine (a chroot whose writes land in a
// temp dir, so the real system is untouched), where it must become the system MTA, deliver
// `sendmail` mail through the daemon started as the systemd unit starts it, flush on a
// hook-driven link-up, and survive purge and reinstall.

import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const VERSION = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')).version as string;
const ARCH = execFileSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).trim();
const COMMANDS = ['usr/sbin/sendmail', 'usr/bin/mailq', 'usr/bin/newaliases', 'usr/sbin/runq', 'usr/bin/rmail', 'usr/bin/tidemail'];
const HOOKS = [
  'etc/NetworkManager/dispatcher.d/90-tidemail',
  'etc/networkd-dispatcher/routable.d/50-tidemail',
  'etc/networkd-dispatcher/off.d/50-tidemail',
  'etc/network/if-up.d/tidemail',
  'etc/network/if-post-down.d/tidemail',
  'etc/ppp/ip-up.d/tidemail',
  'etc/ppp/ip-down.d/tidemail',
];

let deb = '';

/** Builds the package once for the whole file (gzip: xz would triple the build time in CI). */
function buildDeb(): string {
  if (deb) return deb;
  const out = tmpDir('tidemail-deb-');
  const r = spawnSync(path.join(REPO, 'packaging/debian/build.sh'), { env: { ...process.env, OUT: out, DEB_COMPRESS: 'gzip' }, encoding: 'utf8' });
  assert.is(r.status, 0, `build.sh failed:\n${r.stderr}`);
  deb = r.stdout.trim().split('\n').pop()!;
  assert.is(deb, path.join(out, `tidemail_${VERSION}_${ARCH}.deb`));
  return deb;
}

interface Entry {
  mode: string;
  owner: string;
  path: string;
  target?: string;
}

/** `dpkg-deb -c` as entries: "-rwxr-xr-x root/root 530 date time ./path [-> target]". */
function listing(file: string): Map<string, Entry> {
  const out = execFileSync('dpkg-deb', ['-c', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const m = new Map<string, Entry>();
  for (const line of out.split('\n').filter(Boolean)) {
    const f = line.split(/\s+/);
    const [p, arrow, target] = f.slice(5);
    m.set(p.replace(/^\.\//, '').replace(/\/$/, ''), { mode: f[0], owner: f[1], path: p, target: arrow === '->' ? target : undefined });
  }
  return m;
}

const inspect = suite('deb: built package');

inspect('control fields: version, build architecture, nodejs dependency, MTA relations', () => {
  const field = (f: string) => execFileSync('dpkg-deb', ['-f', buildDeb(), f], { encoding: 'utf8' }).trim();
  assert.is(field('Package'), 'tidemail');
  assert.is(field('Version'), VERSION);
  // Native addons inside: the package is for this architecture, not "all".
  assert.is(field('Architecture'), ARCH);
  const depends = field('Depends').split(/,\s*/);
  assert.ok(depends.includes('nodejs (>= 20.19)'), field('Depends'));
  assert.ok(depends.includes('adduser'), field('Depends'));
  assert.ok(depends.some((d) => d.startsWith('libc6')), `shared-library dependencies missing: ${field('Depends')}`);
  for (const f of ['Provides', 'Conflicts', 'Replaces']) assert.is(field(f), 'mail-transport-agent', f);
});

inspect('files: commands link to the launcher, hooks and unit in place, root-owned, no tests or dev modules', () => {
  const files = listing(buildDeb());
  for (const c of COMMANDS) {
    const e = files.get(c);
    assert.ok(e, `${c} missing`);
    assert.is(e!.target, '../lib/tidemail/bin/tidemail.js', c);
  }
  assert.is(files.get('usr/lib/tidemail/bin/tidemail.js')?.mode, '-rwxr-xr-x');
  assert.ok(files.has('usr/lib/tidemail/dist/src/main.js'));
  assert.ok(files.has('usr/lib/tidemail/dist/bundle/main.js'), 'the bundle the launcher runs (packaging/bundle.mjs)');
  for (const f of ['bin/package.json', 'dist/bundle/sendmail.cjs', 'dist/bundle/sendmail.cjs.cache', 'dist/bundle/sendmail-loader.cjs']) {
    assert.ok(files.has(`usr/lib/tidemail/${f}`), `${f}: the CommonJS launcher and the sendmail bundle with its code cache (packaging/sendmail-bundle.mjs)`);
  }
  assert.ok(files.has('usr/lib/tidemail/dist/bundle/privsep-helper.cjs'), 'the delivery helper\'s bundle (packaging/helper-bundle.mjs)');
  assert.is(files.get('usr/lib/systemd/system/tidemail.service')?.mode, '-rw-r--r--');
  for (const h of HOOKS) assert.is(files.get(h)?.mode, '-rwxr-xr-x', h);
  const addon = [...files.keys()].find((p) => p.endsWith('sqlite3/build/Release/node_sqlite3.node'));
  assert.ok(addon, 'sqlite3 addon missing');
  assert.is(files.get(addon!)!.mode, '-rw-r--r--');
  for (const [p, e] of files) {
    assert.is(e.owner, 'root/root', p);
    assert.not.ok(p.startsWith('usr/lib/tidemail/dist/test'), `test code shipped: ${p}`);
    assert.not.match(p, /node_modules\/(typescript|uvu|@types|node-gyp)(\/|$)/, `build/dev module shipped: ${p}`);
    assert.not.match(p, /\.(o|a|cc|gyp)$/, `build leftover shipped: ${p}`);
  }
  const conffiles = execFileSync('sh', ['-c', `dpkg-deb --ctrl-tarfile "$1" | tar -xO ./conffiles`, 'sh', buildDeb()], { encoding: 'utf8' });
  assert.equal(conffiles.trim().split('\n').sort(), HOOKS.map((h) => `/${h}`).sort());
});

inspect('the shipped addon loads with the shipped node_modules', () => {
  const dir = tmpDir();
  execFileSync('dpkg-deb', ['-x', buildDeb(), dir]);
  const lib = path.join(dir, 'usr/lib/tidemail');
  const out = execFileSync(process.execPath, ['-e', `const s = require('sqlite3'); new s.Database(':memory:').get('select 41+1 as v', (e, r) => console.log(e ? e.message : r.v))`], { cwd: lib, encoding: 'utf8' });
  assert.is(out.trim(), '42');
});

const hasLintian = spawnSync('sh', ['-c', 'command -v lintian']).status === 0;
if (hasLintian) {
  inspect('lintian: no errors or warnings beyond the justified overrides', () => {
    const r = spawnSync('lintian', ['--no-cfg', '--fail-on', 'error,warning', buildDeb()], { encoding: 'utf8' });
    const tags = r.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
    assert.equal(tags, [], tags.join('\n'));
    assert.is(r.status, 0, r.stderr);
  });
} else {
  inspect.skip('lintian (not installed: apt-get install lintian)', () => undefined);
}

inspect.run();

// ---- installed into an overlay of this machine --------------------------------------------

/** An overlay of / mounted at `root`: the package manager and maintainer scripts run for real. */
interface Overlay {
  root: string;
  run(args: string[], opts?: { input?: string; env?: Record<string, string>; user?: string }): { status: number | null; stdout: string; stderr: string };
  dispose(): void;
}

function mountOverlay(): Overlay {
  // Not a tmpDir(): it may only be deleted once nothing is mounted below it (/proc, /dev!).
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-overlay-'));
  const [upper, work, root] = ['upper', 'work', 'root'].map((d) => path.join(base, d));
  for (const d of [upper, work, root]) fs.mkdirSync(d);
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=/,upperdir=${upper},workdir=${work}`, root]);
  const mounts = [root];
  // A fresh install: whatever tidemail state this machine has (a maildrop a `sendmail` left,
  // a config) is hidden in the overlay — removed there, which only writes whiteouts to `upper`.
  for (const d of ['var/lib/tidemail', 'etc/tidemail', 'var/log/tidemail', 'run/tidemail']) fs.rmSync(path.join(root, d), { recursive: true, force: true });
  const bind = (d: string) => {
    execFileSync('mount', ['--bind', d, path.join(root, d)]);
    mounts.unshift(path.join(root, d));
  };
  let disposed = false;
  const dispose = () => {
    if (disposed) return;
    disposed = true;
    for (const m of mounts) spawnSync('umount', ['-l', m]);
    const still = fs.readFileSync('/proc/mounts', 'utf8').split('\n').filter((l) => l.split(' ')[1]?.startsWith(base));
    if (still.length) process.stderr.write(`deb.test: still mounted, left in place: ${still.join('; ')}\n`);
    else fs.rmSync(base, { recursive: true, force: true });
  };
  process.on('exit', dispose);
  try {
    bind('/proc');
    bind('/dev');
    bind('/dev/pts');
    // Inside the overlay no service may be started or stopped (postfix's scripts, ours).
    writeFile(path.join(root, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', 0o755);
  } catch (err) {
    dispose();
    throw err;
  }
  return {
    root,
    run: (args, opts = {}) => {
      const home = opts.user ? '/nonexistent' : '/root';
      const env = { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', HOME: home, LANG: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive', ...opts.env };
      const r = spawnSync('chroot', [...(opts.user ? [`--userspec=${opts.user}`] : []), root, ...args], { input: opts.input, env, encoding: 'utf8', timeout: 180_000 });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    dispose,
  };
}

/** The unit's Exec lines split as systemd splits them ("…" and '…' quoting, $$ = $). */
function unitCommand(unit: string, key: string): string[] {
  const line = unit.split('\n').find((l) => l.startsWith(`${key}=`));
  assert.ok(line, `${key} missing from the unit`);
  const words: string[] = [];
  const re = /'([^']*)'|"([^"]*)"|(\S+)/g;
  for (let m; (m = re.exec(line!.slice(key.length + 1))); ) words.push((m[1] ?? m[2] ?? m[3]).replaceAll('$$', '$'));
  if (words[0].startsWith('-')) words[0] = words[0].slice(1); // "-" = failure ignored
  return words;
}

/** Starts the daemon inside the overlay exactly as the unit does: ExecStartPre, ExecStart, then ExecStartPost must see it ready. */
async function startAsUnit(o: Overlay): Promise<ChildProcess & { logs: () => string }> {
  const unit = fs.readFileSync(path.join(o.root, 'usr/lib/systemd/system/tidemail.service'), 'utf8');
  o.run(unitCommand(unit, 'ExecStartPre'));
  const proc = spawn('chroot', [o.root, ...unitCommand(unit, 'ExecStart')], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  process.on('exit', () => proc.kill('SIGKILL'));
  // Asynchronously, so the daemon's output is collected meanwhile and shown if it fails.
  const postCode = await new Promise<number | null>((resolve) => {
    const post = spawn('chroot', [o.root, ...unitCommand(unit, 'ExecStartPost')], { stdio: ['ignore', 'pipe', 'pipe'] });
    post.stderr!.on('data', (d) => (out += d));
    post.on('exit', resolve);
  });
  assert.is(postCode, 0, `ExecStartPost (readiness) failed:\n${out}`);
  await waitFor('"daemon ready" in the log', () => /daemon ready/.test(out), 5000);
  return Object.assign(proc, { logs: () => out });
}

/** Command lines of the privsep helpers among a process's descendants. */
function helperCommands(pid: number): string[] {
  const out: string[] = [];
  const walk = (p: number): void => {
    const read = (f: string): string => fs.readFileSync(f, { encoding: 'utf8', flag: 'r' });
    let tasks: string[] = [];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      return; // gone meanwhile
    }
    for (const t of tasks) {
      let kids: number[] = [];
      try {
        kids = read(`/proc/${p}/task/${t}/children`).trim().split(/\s+/).filter(Boolean).map(Number);
      } catch {
        continue;
      }
      for (const k of kids) {
        let cmd = '';
        try {
          cmd = read(`/proc/${k}/cmdline`).split('\0').join(' ');
        } catch {
          continue;
        }
        if (/privsep/.test(cmd)) out.push(cmd);
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

/** The admin's config for the smoke test: a free loopback port and one route, "wan0", that only a hook brings up. */
async function configure(o: Overlay, sh: Smarthost): Promise<number> {
  const port = await freePort();
  writeFile(path.join(o.root, 'etc/tidemail/tidemail.toml'), `hostname = "pkg.test"\n[smtp]\nlisten = ["127.0.0.1:${port}"]\n[queue]\nretry_min = "1h"\n`);
  writeFile(path.join(o.root, 'etc/tidemail/routes/wan0.toml'), smarthostRoute(sh.port, 'online.file = "/etc/tidemail/wan0.up"'));
  return port;
}

const install = suite('deb: installed as the system MTA (overlay of this machine)');

if (!isRoot()) {
  install.after(() => cleanupTmp());
  install.skip('apt install, sendmail through the daemon, hook flush, purge, reinstall (needs root: overlay mount, chroot)', () => undefined);
} else {
  let o: Overlay | null = null;
  let daemon: (ChildProcess & { logs: () => string }) | null = null;
  let sh: Smarthost | null = null;
  install.after(async () => {
    if (daemon) await stop(daemon);
    await sh?.close();
    o?.dispose();
    cleanupTmp();
  });

  install('apt installs it in place of the current MTA; user, state dirs and unit set up', () => {
    const file = buildDeb();
    o = mountOverlay();
    fs.copyFileSync(file, path.join(o.root, 'tmp', path.basename(file)));
    const r = o.run(['apt-get', 'install', '-y', '--no-install-recommends', `/tmp/${path.basename(file)}`]);
    assert.is(r.status, 0, `apt-get install failed:\n${r.stdout}\n${r.stderr}`);
    // postinst suggests the set-up step.
    assert.match(r.stdout, /tidemail setup PRESET/);
    // Conflicts: mail-transport-agent — whatever MTA was installed is gone, we are /usr/sbin/sendmail.
    assert.is(fs.realpathSync(path.join(o.root, 'usr/sbin/sendmail')), path.join(o.root, 'usr/lib/tidemail/bin/tidemail.js'));
    const mtas = o.run(['dpkg-query', '-W', '-f', '${Package} ${db:Status-Abbrev}\\n']).stdout.split('\n').filter((l) => /^(postfix|exim4-daemon-light|exim4-daemon-heavy|nullmailer|msmtp-mta|dma|opensmtpd) ii/.test(l));
    assert.equal(mtas, []);
    const passwd = fs.readFileSync(path.join(o.root, 'etc/passwd'), 'utf8');
    const user = /^tidemail:x:(\d+):(\d+):/m.exec(passwd);
    assert.ok(user, 'no tidemail user');
    const uid = Number(user![1]);
    const st = (p: string) => fs.statSync(path.join(o!.root, p));
    assert.is(st('var/lib/tidemail').uid, uid);
    assert.is(st('var/lib/tidemail').mode & 0o7777, 0o755);
    assert.is(st('var/lib/tidemail/maildrop').uid, uid);
    assert.is(st('var/lib/tidemail/maildrop').mode & 0o7777, 0o1733);
    assert.is(st('etc/tidemail/secrets').uid, uid);
    assert.is(st('etc/tidemail/secrets').mode & 0o7777, 0o700);
    // Not in group mail: the root helper writes /var/mail; the daemon keeps no supplementary group.
    assert.not.match(o.run(['id', '-nG', 'tidemail']).stdout, /\bmail\b/);
    // Enabled as dh_installsystemd would (started only where systemd runs).
    // (lstat: the link points at /lib/systemd/system/…, a path inside the overlay.)
    assert.ok(fs.lstatSync(path.join(o.root, 'etc/systemd/system/multi-user.target.wants/tidemail.service')).isSymbolicLink(), 'unit not enabled');
    // newaliases ran.
    assert.ok(fs.existsSync(path.join(o.root, 'etc/aliases.tidemail.json')));
    // systemd accepts the unit as installed (every directive parsed, every command present).
    if (fs.existsSync(path.join(o.root, 'usr/bin/systemd-analyze'))) {
      const v = o.run(['systemd-analyze', 'verify', '/usr/lib/systemd/system/tidemail.service']);
      assert.is(v.status, 0, v.stderr);
      assert.is(v.stderr.trim(), '', v.stderr);
    }
  });

  install('sendmail reaches the smarthost once an ifupdown hook says the link is up', async () => {
    assert.ok(o, 'not installed');
    sh = await startSmarthost();
    await configure(o!, sh);
    daemon = await startAsUnit(o!);
    assert.match(daemon.logs(), /running unprivileged.*tidemail/);
    // The root delivery helper the daemon forked runs from the package's bundle (issue 17).
    const helpers = helperCommands(daemon.pid!);
    assert.ok(helpers.some((c) => c.includes('/usr/lib/tidemail/dist/bundle/privsep-helper.cjs')), `helper not run from the bundle: ${helpers.join(' | ') || 'no helper'}`);
    const r = o!.run(['/usr/sbin/sendmail', '-i', 'x@remote.example'], { input: 'Subject: from the package\n\nhello\n' });
    assert.is(r.status, 0, r.stderr);
    await waitFor('queued', () => o!.run(['/usr/bin/mailq']).stdout.includes('x@remote.example'), 10_000, 200);
    assert.is(sh.messages.length, 0, 'sent before the link came up');
    const hook = o!.run(['/etc/network/if-up.d/tidemail'], { env: { MODE: 'start', IFACE: 'wan0' } });
    assert.is(hook.status, 0, hook.stderr);
    const [m] = await sh.waitForMessages(1, 15_000);
    assert.is(m!.from, 'root@pkg.test');
    assert.match(m!.raw.toString(), /Subject: from the package/);
  });

  install("an ordinary user's sendmail reaches the system daemon too", async () => {
    assert.ok(o && sh && daemon, 'previous step failed');
    const before = sh!.messages.length;
    const r = o!.run(['/usr/sbin/sendmail', '-i', 'z@remote.example'], { input: 'Subject: from nobody\n\nx\n', user: 'nobody:nogroup' });
    assert.is(r.status, 0, `sendmail as nobody: ${r.stderr}`);
    // The route is up since the hook: the daemon picks the message out of the maildrop and sends it.
    const got = await sh!.waitForMessages(before + 1, 15_000);
    assert.is(got[before]!.from, 'nobody@pkg.test');
  });

  install('purge removes state and config but not the user; reinstall works and a networkd hook flushes', async () => {
    assert.ok(o && sh, 'previous step failed');
    if (daemon) await stop(daemon);
    daemon = null;
    const purge = o!.run(['dpkg', '--purge', 'tidemail']);
    assert.is(purge.status, 0, purge.stderr);
    for (const p of ['var/lib/tidemail', 'etc/tidemail', 'usr/sbin/sendmail', 'usr/lib/tidemail', 'etc/network/if-up.d/tidemail', 'etc/aliases.tidemail.json']) {
      assert.not.ok(fs.existsSync(path.join(o!.root, p)), `${p} survived the purge`);
    }
    assert.match(fs.readFileSync(path.join(o!.root, 'etc/passwd'), 'utf8'), /^tidemail:/m);

    const again = o!.run(['dpkg', '-i', `/tmp/${path.basename(buildDeb())}`]);
    assert.is(again.status, 0, `reinstall failed:\n${again.stdout}\n${again.stderr}`);
    assert.is(fs.statSync(path.join(o!.root, 'var/lib/tidemail/maildrop')).mode & 0o7777, 0o1733);
    await configure(o!, sh!);
    daemon = await startAsUnit(o!);
    const r = o!.run(['/usr/sbin/sendmail', '-i', 'y@remote.example'], { input: 'Subject: after reinstall\n\nx\n' });
    assert.is(r.status, 0, r.stderr);
    const before = sh!.messages.length;
    await waitFor('queued', () => o!.run(['/usr/bin/mailq']).stdout.includes('y@remote.example'), 10_000, 200);
    const hook = o!.run(['/etc/networkd-dispatcher/routable.d/50-tidemail'], { env: { STATE: 'routable', IFACE: 'wan0' } });
    assert.is(hook.status, 0, hook.stderr);
    const got = await sh!.waitForMessages(before + 1, 15_000);
    assert.equal(got[before].to, ['y@remote.example']);
  });
}

install.run();
