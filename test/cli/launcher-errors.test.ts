// Errors that escape a command reach the user through the real launcher (bin/tidemail.js) as
// one clear message — what, where (file:line for the config), the fix — and a sysexits code,
// never a stack trace (that only with TIDEMAIL_DEBUG set).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { BIN, makeSite, runCli } from '../helpers/daemon.js';
import { smallDisk, fillDisk, unmountDisks } from '../helpers/disk.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

const noStack = (s: string) => assert.not.match(s, /^\s+at /m, `stack trace:\n${s}`);
const daemon = (configPath: string, env: NodeJS.ProcessEnv = {}) => runCli(['daemon', '--config', configPath], { env });

if (isRoot()) {
  test('user = "root" as root: EX_CONFIG (78), file:line of `user` and the fix', async () => {
    const site = await makeSite();
    fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('user = "nobody"', 'user = "root"'));
    const r = await daemon(site.configPath);
    assert.is(r.code, 78, r.stderr);
    assert.match(r.stderr, new RegExp(`^tidemail: configuration error: ${site.configPath}:3:1: user = "root": refusing to run as root\\n  fix: set user = "tidemail"`));
    noStack(r.stderr);
  });

  test('a state dir that a read-only mount holds: EX_CANTCREAT (73), says remount or move it', async () => {
    const site = await makeSite();
    fs.mkdirSync(site.stateDir);
    const script = `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && exec "$2" "$3" daemon --config "$4"`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', script, 'sh', site.stateDir, process.execPath, BIN, site.configPath], { encoding: 'utf8', timeout: 30_000 });
    if (/unshare failed|Operation not permitted/.test(r.stderr ?? '')) return void console.log('  (skipped: no mount namespaces)');
    assert.is(r.status, 73, r.stderr);
    assert.match(r.stderr, /read-only.*remount it read-write .*or set state_dir/);
    noStack(r.stderr);
  });

  test('user add and dkim keygen on a read-only filesystem: EX_CANTCREAT (73), "read-only", the file named', async () => {
    const site = await makeSite();
    const script = `mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && echo pw12345678 | "$2" "$3" user add bob --config "$4"; echo "rc=$?"; "$2" "$3" dkim keygen example.org --out "$1/dkim"; echo "rc=$?"`;
    const r = spawnSync('unshare', ['-m', 'sh', '-c', script, 'sh', site.dir, process.execPath, BIN, site.configPath], { encoding: 'utf8', timeout: 30_000 });
    if (/unshare failed|Operation not permitted/.test(r.stderr ?? '')) return void console.log('  (skipped: no mount namespaces)');
    assert.equal(r.stdout.match(/rc=\d+/g), ['rc=73', 'rc=73'], r.stderr);
    assert.match(r.stderr, new RegExp(`^tidemail: cannot write ${site.dir}/users: the filesystem is read-only\\n  fix: remount it read-write`, 'm'));
    assert.match(r.stderr, new RegExp(`^tidemail: cannot write ${site.dir}: the filesystem is read-only`, 'm'));
    assert.not.match(r.stderr, /internal error/);
    noStack(r.stderr);
  });

  test('a full disk at start: EX_TEMPFAIL (75), names the state dir and says free space', async () => {
    const stateDir = smallDisk(256);
    fillDisk(stateDir);
    const site = await makeSite('', { stateDir });
    const r = await daemon(site.configPath);
    assert.is(r.code, 75, r.stderr);
    assert.match(r.stderr, /no space left on the device .*free space on that filesystem/);
    noStack(r.stderr);
  });

  test('a state dir the run user cannot reach: EX_NOPERM (77), the fix names the config file in use', async () => {
    const dir = tmpDir();
    fs.chmodSync(dir, 0o700);
    const site = await makeSite('', { stateDir: path.join(dir, 'state') });
    const other = path.join(site.dir, 'other-name.toml');
    fs.renameSync(site.configPath, other);
    const r = await daemon(other);
    assert.is(r.code, 77, r.stderr);
    assert.match(r.stderr, new RegExp(`set state_dir in ${other} `));
    noStack(r.stderr);
  });
}

test('a command pointed at a path under a file (dkim keygen --out): EX_CANTCREAT (73), what and where, not an internal error', async () => {
  const dir = tmpDir();
  const file = writeFile(path.join(dir, 'a-file'), 'x\n');
  const r = await runCli(['dkim', 'keygen', 'example.org', '--out', path.join(file, 'keys')]);
  assert.is(r.code, 73, r.stderr);
  assert.match(r.stderr, new RegExp(`^tidemail: cannot write ${file}/keys: a part of the path is not a directory\\n  fix: give another path\\n$`));
});

test('a user that is not a login name: EX_CONFIG (78) at file:line, no shell words in the fix', async () => {
  const site = await makeSite();
  fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('user = "nobody"', 'user = "x; rm -rf ~"'));
  const r = await daemon(site.configPath);
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, new RegExp(`${site.configPath}:3:1: 'user' "x; rm -rf ~" is not a login name`));
  assert.not.match(r.stderr, /useradd/);
  noStack(r.stderr);
});

test('state_dir is a file: EX_CANTCREAT (73), says so, and the file is kept', async () => {
  const site = await makeSite();
  writeFile(site.stateDir, 'not a directory\n');
  const r = await daemon(site.configPath);
  assert.is(r.code, 73, r.stderr);
  assert.match(r.stderr, new RegExp(`^tidemail: ${site.stateDir}: exists and is not a directory; set state_dir to a directory`));
  assert.is(fs.readFileSync(site.stateDir, 'utf8'), 'not a directory\n');
  noStack(r.stderr);
});

test('a damaged queue database: EX_IOERR (74), said once, the file kept', async () => {
  const site = await makeSite();
  const db = path.join(site.stateDir, 'queue.sqlite');
  // An SQLite header followed by garbage: passes the magic check, fails on open.
  writeFile(db, Buffer.concat([Buffer.from('SQLite format 3\0'), Buffer.alloc(4080, 0x5a)]), 0o666);
  const r = await daemon(site.configPath);
  assert.is(r.code, 74, r.stderr);
  assert.is(r.stderr.match(/is damaged/g)?.length, 1, r.stderr);
  assert.match(r.stderr, /tidemail queue salvage/);
  assert.ok(fs.existsSync(db));
  noStack(r.stderr);
});

test('a missing TLS certificate: EX_CONFIG (78), file:line of tls_cert, the file and the fix', async () => {
  const site = await makeSite('', { smtpToml: 'tls_cert = "missing-cert.pem"\ntls_key = "missing-key.pem"' });
  const r = await daemon(site.configPath);
  assert.is(r.code, 78, r.stderr);
  const line = fs.readFileSync(site.configPath, 'utf8').split('\n').findIndex((l) => l.startsWith('tls_cert')) + 1;
  assert.match(r.stderr, new RegExp(`${site.configPath}:${line}:1: cannot read TLS cert \\S+missing-cert\\.pem: ENOENT \\(no such file\\)\\n  fix: check tls_cert`));
  noStack(r.stderr);
});

test('a listen host name that does not resolve: EX_CONFIG (78), says so and to write an address', async () => {
  const site = await makeSite();
  fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace(/listen = \["127\.0\.0\.1:(\d+)"\]/, 'listen = ["no-such-host.invalid:$1"]'));
  const r = await daemon(site.configPath);
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, /^tidemail: listen no-such-host\.invalid:\d+: the host name does not resolve \((ENOTFOUND|EAI_AGAIN)\)\n  fix: write an address in \[smtp\] listen/);
  noStack(r.stderr);
});

test('an error nothing catches (thrown in a timer): EX_SOFTWARE (70), one line; the stack only with TIDEMAIL_DEBUG', async () => {
  // Loaded before the launcher: throws from a timer once the daemon is running.
  const site = await makeSite();
  const preload = writeFile(path.join(site.dir, 'throw-later.cjs'),
    // Only in the launcher's process: the delivery helper (forked as root) loads it too.
    `if (/tidemail\\.js$/.test(process.argv[1] ?? '')) setTimeout(() => { throw new Error('thrown from a timer'); }, 1500).unref();\n`);
  const env = { NODE_OPTIONS: `--require ${preload}` };
  const r = await daemon(site.configPath, env);
  assert.is(r.code, 70, r.stderr);
  assert.match(r.stderr, /tidemail: internal error: thrown from a timer\n  this is a bug in tidemail: run again with TIDEMAIL_DEBUG=1/);
  // The daemon's log has the stack, on one line.
  assert.match(r.stderr, /error +internal error error="thrown from a timer" stack="at [^\n]*throw-later\.cjs/);
  noStack(r.stderr);

  const debug = await daemon(site.configPath, { ...env, TIDEMAIL_DEBUG: '1' });
  assert.is(debug.code, 70, debug.stderr);
  assert.match(debug.stderr, /internal error: Error: thrown from a timer\n\s+at /);
});

test('a reader that goes away (`tidemail check | head -1`): no message, the code check has when read to the end', async () => {
  const site = await makeSite();
  const whole = await runCli(['check', '--config', site.configPath]);
  const proc = spawn(process.execPath, [BIN, 'check', '--config', site.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  // What head does after its first line: close the pipe while check still has lines to print.
  proc.stdout.once('data', () => proc.stdout.destroy());
  const code = await new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  assert.is(code, whole.code, stderr); // was EX_IOERR (74); docs/DESIGN-NOTES.md "A reader that goes away"
  assert.is(stderr, '');
});

test.run();
