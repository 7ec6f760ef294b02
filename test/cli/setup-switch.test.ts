// `setup --force` killed (SIGKILL) at every step that changes a file: the live config dir is
// entirely the old one or entirely the new one, and `config check` agrees. The process is
// stopped from outside our code: a preload (node --import, written by this test) counts the
// fs calls that change something and, at the chosen one, blocks until the test kills it.
// The one step where Linux offers no atomic swap (between the two final renames) leaves no live
// dir but a complete `.ready-PID` one: `config check` fails there, and the next setup finishes
// the switch.

import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, runCli } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';
import { passwordFile } from '../presets/apply.js';

test.after(() => cleanupTmp());

const work = tmpDir('tidemail-switch-');
const PRELOAD = writeFile(
  path.join(work, 'stop-at.mjs'),
  `import fs from 'node:fs';
const stopAt = Number(process.env.STOP_AT ?? 0);
const mark = process.env.STOP_MARK;
const write = fs.writeFileSync;
const append = fs.appendFileSync;
let n = 0;
let own = false; // our own log writes go through the patched functions too
function step(name, args) {
  if (own) return;
  n++;
  own = true;
  if (process.env.STOP_LOG) append(process.env.STOP_LOG, n + ' ' + name + ' ' + String(args[0]) + '\\n');
  if (n === stopAt && mark) write(mark, name + ' ' + String(args[0]));
  own = false;
  if (n === stopAt && process.env.STOP_MODE === 'fail') {
    // An I/O error here instead (a full or failing disk).
    throw Object.assign(new Error('EIO: i/o error, ' + name + " '" + String(args[0]) + "'"), { code: 'EIO', errno: -5, syscall: name.replace(/^promises\.|Sync$/g, ''), path: String(args[0]) });
  }
  if (n === stopAt) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); // until SIGKILL
  }
}
const changes = (name, args) => name !== 'openSync' || /[wax+]/.test(String(args[1] ?? 'r'));
for (const name of ['renameSync', 'linkSync', 'writeFileSync', 'mkdirSync', 'rmSync', 'unlinkSync', 'symlinkSync', 'copyFileSync', 'openSync', 'chmodSync', 'fchmodSync', 'chownSync', 'fchownSync', 'cpSync']) {
  const orig = fs[name];
  fs[name] = function (...args) {
    if (changes(name, args)) step(name, args);
    return orig.apply(this, args);
  };
}
for (const name of ['rename', 'open', 'writeFile', 'rm']) {
  const orig = fs.promises[name];
  fs.promises[name] = function (...args) {
    try {
      if (name !== 'open' || changes('openSync', args)) step('promises.' + name, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return orig.apply(this, args);
  };
}
`,
);

const root = path.join(work, 'root');
fs.mkdirSync(root);
const template = path.join(work, 'template');
const etc = path.join(root, 'etc', 'tidemail');
const oldArgs = ['--smarthost', '127.0.0.1:2587', '--user', 'me@example.net', '--password-file', passwordFile('old secret'), '--listen', '127.0.0.1:2599'];
const newArgs = ['--smarthost', 'fastmail', '--user', 'me@example.net', '--password-file', passwordFile('new secret'), '--listen', '127.0.0.1:2599'];
const setup = (args: string[]) => ['setup', 'laptop', '--root', root, ...args];

/** Every file under DIR: relative path → content and mode. */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string, rel: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(d, e.name);
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(p, r);
      // The compiled aliases record the text's mtime, which differs from run to run.
      else out.set(r, `${(fs.statSync(p).mode & 0o777).toString(8)} ${fs.readFileSync(p, 'utf8').replace(/"sourceMtimeMs":[\d.]+/, '')}`);
    }
  };
  walk(dir, '');
  return out;
}

const same = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);

/** Puts the old configuration back at `root` (exactly, modes and owners kept). */
function restore(): void {
  fs.rmSync(root, { recursive: true, force: true });
  execFileSync('cp', ['-a', template, root]);
}

/** Runs setup with the preload; stops and SIGKILLs it at fs step `at` (0: let it finish). */
async function runStopped(args: string[], at: number, log?: string): Promise<string | null> {
  const mark = path.join(work, `mark-${at}`);
  fs.rmSync(mark, { force: true });
  const env = { ...process.env, NODE_OPTIONS: `--import=${pathToFileURL(PRELOAD).href}`, STOP_AT: String(at), STOP_MARK: mark, ...(log ? { STOP_LOG: log } : {}) };
  const proc = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout.on('data', (d) => (output += d));
  proc.stderr.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  if (at === 0) {
    const code = await exited;
    assert.equal(code, 0, output);
    return null;
  }
  const where = await waitFor(`setup to reach step ${at}`, async () => (fs.existsSync(mark) ? fs.readFileSync(mark, 'utf8') : (await Promise.race([exited, Promise.resolve('running')])) === 'running' ? null : `exited: ${output}`), 20_000, 20);
  proc.kill('SIGKILL');
  await exited;
  return where;
}

test('setup --force killed at any step leaves the old or the new config, never a mix; config check agrees', async () => {
  // The old configuration, plus a file of the user's that setup does not generate.
  let r = await runCli(setup(oldArgs));
  assert.equal(r.code, 0, r.stderr);
  writeFile(path.join(etc, 'users'), 'alice:$6$x$y\n', 0o600);
  execFileSync('cp', ['-a', root, template]);
  const oldState = snapshot(etc);

  // The new one, completed, and how many fs steps it takes.
  const log = path.join(work, 'steps');
  await runStopped(setup([...newArgs, '--force']), 0, log);
  const newState = snapshot(etc);
  assert.ok(newState.has('routes/fastmail.toml') && !newState.has('routes/isp.toml'), [...newState.keys()].join(' '));
  assert.equal(newState.get('users'), oldState.get('users'), 'the user\'s own file was carried over, mode kept');
  const steps = fs.readFileSync(log, 'utf8').trim().split('\n').length;
  assert.ok(steps > 10, `only ${steps} steps were seen`);

  const seen = { old: 0, new: 0, between: 0 };
  for (let at = 1; at <= steps; at++) {
    restore();
    const where = await runStopped(setup([...newArgs, '--force']), at);
    const check = await runCli(['config', 'check', '--config', path.join(etc, 'tidemail.toml')]);
    if (!fs.existsSync(etc)) {
      // Between the two final renames: the complete new dir waits beside the missing live one.
      seen.between++;
      assert.ok(fs.readdirSync(path.dirname(etc)).some((n) => /^tidemail\.ready-\d+$/.test(n)), `step ${at} (${where}): no live dir and no complete new one`);
      assert.not.equal(check.code, 0, `step ${at}: config check said ok with no config`);
      const again = await runCli(setup(newArgs));
      assert.match(again.stderr, /finished an interrupted switch/);
      assert.ok(same(snapshot(etc), newState), `step ${at}: the finished switch is not the new config`);
      continue;
    }
    const now = snapshot(etc);
    const which = same(now, oldState) ? 'old' : same(now, newState) ? 'new' : null;
    assert.ok(which, `step ${at} (${where}): the live config is a mix:\n${[...now.keys()].join('\n')}`);
    seen[which!]++;
    assert.equal(check.code, 0, `step ${at} (${where}): config check: ${check.stderr}`);
    assert.match(check.stdout, /ok \(1 route\(s\)\)/);
    // The next setup cleans up whatever the killed one left beside the live dir.
    const again = await runCli(setup(newArgs));
    assert.equal(again.code, 73, again.stderr);
    assert.equal(fs.readdirSync(path.dirname(etc)).filter((n) => /\.(new|ready|old)-\d+$/.test(n)), [], `step ${at}: leftovers`);
  }
  // The last step that changes anything is the final rename: before it the old dir is gone, after
  // it nothing is written (config check only reads), which the completed run above covers.
  assert.ok(seen.old === steps - 1 && seen.between === 1, JSON.stringify(seen));
});

test('an I/O error at any step before the switch: a clear message, no stack, and the old config untouched', async () => {
  restore();
  const oldState = snapshot(etc);
  const log = path.join(work, 'steps-fail');
  fs.rmSync(log, { force: true });
  await runStopped(setup([...newArgs, '--force']), 0, log);
  const steps = fs.readFileSync(log, 'utf8').trim().split('\n').length;
  for (let at = 1; at <= steps; at++) {
    restore();
    const r = await runCli(setup([...newArgs, '--force']), { env: { NODE_OPTIONS: `--import=${pathToFileURL(PRELOAD).href}`, STOP_AT: String(at), STOP_MODE: 'fail' } });
    assert.not.equal(r.code, 0, `step ${at}: setup said ok after an I/O error`);
    assert.not.match(r.stderr, /\n\s+at /, `step ${at}: a stack trace:\n${r.stderr}`);
    assert.match(r.stderr, /EIO/, `step ${at}`);
    assert.ok(same(snapshot(etc), oldState), `step ${at}: the live config changed:\n${r.stderr}`);
    assert.equal(fs.readdirSync(path.dirname(etc)).filter((n) => /\.(new|ready|old)-\d+$/.test(n)), [], `step ${at}: left behind`);
  }
});

test('the backup is the old dir itself: secrets keep mode 0600 and are not copied', async () => {
  restore();
  const oldSecret = fs.statSync(path.join(etc, 'secrets', 'isp'));
  const r = await runCli(setup([...newArgs, '--force']));
  assert.equal(r.code, 0, r.stderr);
  const backup = /backup: the old configuration is kept in (\S+)/.exec(r.stdout)![1]!;
  const moved = fs.statSync(path.join(backup, 'secrets', 'isp'));
  assert.equal([moved.ino, moved.mode & 0o777], [oldSecret.ino, 0o600], 'the old secret was moved, not copied');
  // What setup does not generate stays in the new config as it was (as before): the same inode.
  assert.equal(fs.statSync(path.join(etc, 'secrets', 'isp')).ino, oldSecret.ino, 'a secret was copied');
  const users = [fs.statSync(path.join(etc, 'users')), fs.statSync(path.join(backup, 'users'))];
  assert.equal(users[0]!.ino, users[1]!.ino, 'the carried-over file is the same inode in the backup and the new config');
  assert.equal(users[0]!.mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.join(etc, 'secrets')).mode & 0o007, 0);
});

test.run();
