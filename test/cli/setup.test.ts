// `tidemail setup` and `tidemail presets` as a user meets them without a terminal (scripts,
// package hooks): a missing answer is exit 64 naming the flag and writes nothing; an existing
// config is never overwritten without --force, and with it the old one is kept as a backup;
// secrets are 0600 and readable by the daemon's user only.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, runCli } from '../helpers/daemon.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';
import { applyPreset, assertApplied, passwordFile } from '../presets/apply.js';

test.after(() => cleanupTmp());

const laptopArgs = () => ['--smarthost', '127.0.0.1:2587', '--user', 'me@example.net', '--password-file', passwordFile('pw one')];

const missingCases: [string, string[], string][] = [
  ['laptop', [], '--user'],
  ['laptop', ['--smarthost', '127.0.0.1:2587', '--user', 'me@example.net'], '--password-file'],
  ['router', ['--smarthost', '127.0.0.1:2587', '--user', 'me@example.net', '--password-file', 'PW'], '--lan'],
  ['pi-home', ['--smarthost', '127.0.0.1:2587', '--no-auth', '--user', 'me@example.net', '--lan', '10.0.0.0/8'], '--local-user'],
  ['satellite', ['--smarthost', '127.0.0.1:2587'], '--admin'],
  ['internet-site', [], '--domain'],
  ['internet-site', ['--domain', 'example.test'], '--admin'],
];

for (const [preset, args, flag] of missingCases) {
  test(`setup ${preset} without a terminal and without ${flag}: exit 64 naming ${flag}, nothing written`, async () => {
    const a = await applyPreset(preset, args.map((x) => (x === 'PW' ? passwordFile('pw') : x)));
    assert.equal(a.result.code, 64, a.result.stdout + a.result.stderr);
    assert.match(a.result.stderr, new RegExp(`missing ${flag}\\b`));
    assert.match(a.result.stderr, new RegExp(`fix: pass ${flag}`));
    assert.not.ok(fs.existsSync(a.configPath), 'a config was written anyway');
  });
}

test('setup with an unknown preset or option is a usage error listing the presets', async () => {
  const r = await runCli(['setup', 'mainframe', '--root', tmpDir()]);
  assert.equal(r.code, 64);
  assert.match(r.stderr, /unknown preset "mainframe"; use one of laptop, router, pi-home, satellite, local-only, internet-site/);
  const o = await runCli(['setup', 'laptop', '--colour', 'blue']);
  assert.equal(o.code, 64);
  assert.match(o.stderr, /unknown option --colour/);
});

test('presets lists every preset; presets NAME says what it needs', async () => {
  const r = await runCli(['presets']);
  assert.equal(r.code, 0);
  for (const name of ['laptop', 'router', 'pi-home', 'satellite', 'local-only', 'internet-site']) assert.match(r.stdout, new RegExp(`^${name} +\\S`, 'm'));
  const one = await runCli(['presets', 'router']);
  assert.equal(one.code, 0);
  assert.match(one.stdout, /^needs: --smarthost --user --lan/m);
});

test('an existing config is not overwritten without --force; with --force the old one is kept as a backup', async () => {
  const first = assertApplied(await applyPreset('laptop', laptopArgs()));
  const before = fs.readFileSync(first.configPath, 'utf8');
  const oldRoute = first.read('routes/isp.toml');

  const again = await applyPreset('satellite', ['--smarthost', '127.0.0.1:2525', '--admin', 'ops@example.org'], { root: first.root });
  assert.equal(again.result.code, 73, again.result.stderr);
  assert.match(again.result.stderr, /tidemail\.toml exists; not overwriting it/);
  assert.match(again.result.stderr, /pass --force/);
  assert.equal(fs.readFileSync(first.configPath, 'utf8'), before, 'the config changed without --force');

  const forced = assertApplied(await applyPreset('satellite', ['--smarthost', '127.0.0.1:2525', '--tls', 'none', '--admin', 'ops@example.org', '--force'], { root: first.root }));
  const m = /backup: the old configuration is kept in (\S+)/.exec(forced.result.stdout);
  assert.ok(m, forced.result.stdout);
  const backup = m![1]!;
  assert.match(path.basename(backup), /^tidemail\.backup-\d{8}-\d{6}/);
  assert.equal(fs.readFileSync(path.join(backup, 'tidemail.toml'), 'utf8'), before);
  assert.equal(fs.readFileSync(path.join(backup, 'routes', 'isp.toml'), 'utf8'), oldRoute);
  assert.equal(fs.statSync(path.join(backup, 'secrets', 'isp')).mode & 0o777, 0o600, 'the backup of a secret is still private');
  assert.match(forced.read('tidemail.toml'), /setup satellite/);
  assert.not.match(forced.read('routes/isp.toml'), /auth\.user/, 'the old route was replaced, not merged');
  assert.equal((await runCli(['config', 'check', '--config', forced.configPath])).code, 0);
});

test('secrets are written 0600, owned by the daemon\'s user, in a directory others cannot list', async () => {
  const a = assertApplied(await applyPreset('laptop', laptopArgs()));
  const secret = path.join(a.etc, 'secrets', 'isp');
  const st = fs.statSync(secret);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(fs.readFileSync(secret, 'utf8'), 'pw one\n');
  assert.equal(fs.statSync(path.dirname(secret)).mode & 0o007, 0, 'the secrets dir is open to others');
  assert.not.match(a.read('routes/isp.toml'), /pw one/, 'the password leaked into the route file');
  assert.match(a.read('tidemail.toml'), /^user = "tidemail"\s/m, 'the config names the run user setup chose for');
  if (isRoot()) {
    // The run user is tidemail where the package created it, else nobody (with a warning):
    // which one depends on this machine, what setup must do with it does not.
    const tidemail = systemUser('tidemail');
    const runUser = tidemail ?? systemUser('nobody')!;
    assert.equal(st.uid, runUser.uid, `the secret belongs to the run user (${runUser.name})`);
    assert.equal(fs.statSync(a.stateDir).uid, runUser.uid, 'the state dir belongs to the run user');
    assert.match(a.result.stdout, new RegExp(`secrets/isp \\(mode 0600, owner ${runUser.name}\\)`), 'setup says whose the secret is');
    if (!tidemail) assert.match(a.result.stdout + a.result.stderr, /user "tidemail" does not exist; running as "nobody" \(create it: useradd --system tidemail\)/);
  }
  assert.match(a.result.stdout, /aliases: 4 aliases/, 'newaliases ran');
  assert.match(a.result.stdout, /tidemail\.toml: ok \(1 route\(s\)\)/, 'the result was validated like `config check`');
  assert.match(a.result.stdout, /^next:$/m);
});

test('setup --force keeps what a person added: the AUTH users file, the certificate and the DKIM key', async () => {
  const args = ['--domain', 'example.test', '--admin', 'ops@example.org'];
  const first = assertApplied(await applyPreset('internet-site', args));
  fs.writeFileSync(path.join(first.etc, 'users'), 'alice:$6$salt$hash\n');
  const key = first.read('dkim/example.test.key');
  const again = assertApplied(await applyPreset('internet-site', [...args, '--force'], { root: first.root }));
  assert.equal(again.read('users'), 'alice:$6$salt$hash\n', 'the users file was emptied');
  assert.equal(fs.statSync(path.join(again.etc, 'users')).mode & 0o777, 0o600);
  assert.equal(again.read('dkim/example.test.key'), key, 'the DKIM key changed (its DNS record may be published)');
  assert.match(again.result.stdout, /kept the certificate/);
});

test('a password file that cannot be read is a usage error naming it', async () => {
  const a = await applyPreset('laptop', ['--smarthost', '127.0.0.1:2587', '--user', 'me@example.net', '--password-file', '/nonexistent/pw']);
  assert.equal(a.result.code, 64);
  assert.match(a.result.stderr, /cannot read --password-file \/nonexistent\/pw: ENOENT/);
});

/** A user as getent(1) knows it, independently of the code under test; null when there is none. */
function systemUser(name: string): { name: string; uid: number } | null {
  try {
    const f = execFileSync('getent', ['passwd', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split(':');
    return { name: f[0]!, uid: Number(f[2]) };
  } catch {
    return null; // getent exits 2 for "no such user"
  }
}

/**
 * Runs `tidemail ARGS` on a pseudo-terminal (util-linux `script`), answering each prompt when it
 * appears. Returns everything the terminal showed.
 */
function onTerminal(args: string[], answers: [RegExp, string][]): Promise<{ code: number | null; screen: string }> {
  const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const proc = spawn('script', ['-qec', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  const pending = [...answers];
  const onData = (d: Buffer) => {
    screen += d.toString();
    const next = pending[0];
    if (next && next[0].test(screen)) {
      pending.shift();
      proc.stdin.write(`${next[1]}\n`);
    }
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const timer = setTimeout(() => proc.kill('SIGKILL'), 30_000);
  return new Promise((resolve) => proc.on('exit', (code) => {
    clearTimeout(timer);
    resolve({ code, screen });
  }));
}

test('on a terminal, missing answers are asked: the default is shown and taken on Enter, the password is not echoed', async () => {
  const root = tmpDir('tidemail-root-');
  const r = await onTerminal(['setup', 'router', '--root', root, '--smarthost', '127.0.0.1:2587', '--tls', 'starttls', '--user', 'me@example.net', '--listen', '127.0.0.1:2599'], [
    [/Password for me@example\.net at 127\.0\.0\.1:2587 \(not shown\): /, 'typed secret 42'],
    [/Your LAN, which may send mail through this machine(?: \[[^\]]+\])?: /, ''],
  ]);
  assert.equal(r.code, 0, r.screen);
  assert.not.match(r.screen, /typed secret 42/, 'the password was echoed');
  assert.equal(fs.readFileSync(path.join(root, 'etc', 'tidemail', 'secrets', 'isp'), 'utf8'), 'typed secret 42\n');
  const shownDefault = /Your LAN, which may send mail through this machine \[([^\]]+)\]/.exec(r.screen)?.[1];
  assert.ok(shownDefault, `no default LAN was offered:\n${r.screen}`);
  assert.ok(fs.readFileSync(path.join(root, 'etc', 'tidemail', 'tidemail.toml'), 'utf8').includes(`"${shownDefault}"`), 'Enter did not take the default');
});

test('setup --root DIR that does not exist yet: made like install -d, exit 0; under a file: exit 73 naming it', async () => {
  const root = path.join(tmpDir(), 'image', 'new', 'root');
  const r = await runCli(['setup', 'laptop', '--root', root, ...laptopArgs()]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.ok(fs.statSync(path.join(root, 'etc', 'tidemail', 'tidemail.toml')).isFile());
  assert.equal(fs.statSync(root).mode & 0o777, 0o755);
  assert.not.match(r.stderr, /run setup as root/);

  const file = path.join(tmpDir(), 'a-file');
  fs.writeFileSync(file, '');
  const bad = await runCli(['setup', 'laptop', '--root', path.join(file, 'root'), ...laptopArgs()]);
  assert.equal(bad.code, 73, bad.stdout + bad.stderr);
  assert.match(bad.stderr, new RegExp(`^tidemail: cannot create --root ${file}/root: ENOTDIR\n  fix: pick a DIR whose parents are directories\n$`));
  assert.equal(bad.stdout, '', 'setup went on to write after all');
});

test.run();
