// The daemon started where it cannot listen: one clear message (the same words as
// `tidemail check`: who holds the port, the fix) and a sysexits code, never a stack trace.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { BIN, makeSite, runCli } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());
const NOBODY = 65534;

const noStack = (s: string) => assert.not.match(s, /^\s+at /m, `stack trace:\n${s}`);

test('a port in use: exit 75 (EX_TEMPFAIL), names the holder and the fix, as check does', async () => {
  const port = await freePort();
  const holder = net.createServer();
  await new Promise<void>((r) => holder.listen(port, '127.0.0.1', () => r()));
  try {
    const site = await makeSite('', { port });
    const r = await runCli(['daemon', '--config', site.configPath]);
    assert.is(r.code, 75, r.stderr);
    // We hold it ourselves, so /proc tells the daemon exactly who: this test's process.
    assert.match(r.stderr, new RegExp(`tidemail: listen 127\\.0\\.0\\.1:${port}: already in use by \\S+ \\(pid ${process.pid}\\)\\n  fix: stop it .* or change \\[smtp\\] listen\\n`));
    noStack(r.stderr);
    assert.not.match(r.stderr, /smtp error/); // one message, not a log line as well

    const check = await runCli(['check', '--config', site.configPath]);
    assert.match(check.stdout, new RegExp(`listen 127\\.0\\.0\\.1:${port}: already in use by \\S+ \\(pid ${process.pid}\\)`));
  } finally {
    holder.close();
  }
});

test('a port below 1024 as an ordinary user: exit 77 (EX_NOPERM) with the fix', async () => {
  const site = await makeSite('', { port: 25 });
  const opts: { uid?: number; gid?: number } = {};
  if (isRoot()) {
    // Root may bind 25; run the daemon as nobody, with a state dir nobody may write.
    fs.mkdirSync(site.stateDir, { recursive: true });
    fs.chownSync(site.stateDir, NOBODY, NOBODY);
    Object.assign(opts, { uid: NOBODY, gid: NOBODY });
  }
  const r = await runCli(['daemon', '--config', site.configPath], opts);
  assert.is(r.code, 77, r.stderr);
  assert.match(r.stderr, /tidemail: listen 127\.0\.0\.1:25: a port below 1024 needs root\n  fix: start the daemon as root \(it drops to user "nobody" after binding\), or use a port of 1024 or above in \[smtp\] listen\n/);
  noStack(r.stderr);
});

test('a control socket path too long for a unix socket: named, with the fix, exit 78', async () => {
  // A state dir whose control.sock path is over 107 bytes; Linux would cut it short.
  const base = tmpDir();
  const stateDir = path.join(base, 's'.repeat(Math.max(1, 110 - base.length)));
  const site = await makeSite('', { stateDir });
  fs.mkdirSync(stateDir, { recursive: true });
  if (isRoot()) fs.chownSync(stateDir, NOBODY, NOBODY);
  const r = await runCli(['daemon', '--config', site.configPath]);
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, /tidemail: cannot create the control socket \S+\/control\.sock: \w+\n  fix: the path is \d+ bytes, more than a unix socket takes \(107\); use a shorter state_dir\n/);
  noStack(r.stderr);
});

test('SIGTERM while the daemon is still starting (as a supervisor may send it): a clean stop, exit 0', async () => {
  const site = await makeSite();
  const proc = spawn(process.execPath, [BIN, 'daemon', '--config', site.configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let sent = false;
  const onData = (d: Buffer) => {
    out += d;
    // At its first word, long before it is ready: Node's default would kill it outright.
    if (!sent) {
      sent = true;
      proc.kill('SIGTERM');
    }
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const timer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((r) => proc.on('exit', (c) => r(c)));
  clearTimeout(timer);
  assert.is(code, 0, out);
  assert.match(out, /received SIGTERM, stopping/);
  noStack(out);
});

test.run();
