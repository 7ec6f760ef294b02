// The public control socket (0666) against a local user who opens connections and says
// nothing: the daemon's descriptors stay bounded, silent connections are closed, SMTP and the
// admin socket keep working, and a client turned away gets one line, not a stack trace.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => cleanupTmp());

const FLOOD = 600;
const USER = { uid: 54321, gid: 54321 }; // exists nowhere: the test does not depend on users

const openFds = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

/** Opens `n` connections to a unix socket and keeps them, sending nothing. */
async function holdConnections(socketPath: string, n: number): Promise<{ open: () => number; close: () => void }> {
  const socks: net.Socket[] = [];
  let closed = 0;
  for (let i = 0; i < n; i++) {
    await new Promise<void>((resolve) => {
      const s = net.createConnection(socketPath);
      socks.push(s);
      s.on('error', () => undefined);
      s.once('close', () => closed++);
      s.once('connect', () => resolve());
      s.once('error', () => resolve()); // a full backlog (EAGAIN) counts as turned away
    });
  }
  return { open: () => n - closed, close: () => socks.forEach((s) => s.destroy()) };
}

/** The greeting of an SMTP session on `port`, or the error. */
function smtpGreeting(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.createConnection(port, '127.0.0.1');
    s.setEncoding('utf8');
    s.once('data', (d: string) => (s.end('QUIT\r\n'), resolve(d)));
    s.once('error', (e) => resolve(`error ${e.message}`));
  });
}

test('idle connections to the public control socket cannot use up the daemon\'s descriptors; they are closed, and SMTP and the admin socket keep working', async () => {
  const site = await makeSite();
  const d = keep(await startDaemon(site));
  const pid = d.proc.pid!;
  const before = openFds(pid);
  const flood = await holdConnections(path.join(site.stateDir, 'control-public.sock'), FLOOD);
  try {
    // Without a cap the daemon held one descriptor per connection (FLOOD more).
    const during = openFds(pid);
    assert.ok(during < before + 100, `the daemon holds ${during} descriptors with ${FLOOD} idle connections (${before} before)`);
    assert.match(await smtpGreeting(site.port), /^220 /);
    const st = await runCli(['status', '--config', site.configPath]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /daemon:  running/);
    if (isRoot()) {
      // An ordinary user turned away while the cap is full: one line, exit 75, no stack trace.
      const q = await runCli(['mailq', '--config', site.configPath], USER);
      if (q.code !== 0) {
        assert.equal(q.code, 75, q.stderr);
        assert.match(q.stderr, /try again/);
        assert.not.match(q.stderr, /at .*\.js:\d+|internal error/);
      }
    }
    // Silent connections are closed by the daemon (it waits a few seconds for a request line).
    await waitFor('idle connections closed', () => flood.open() === 0, 20_000);
  } finally {
    flood.close();
  }
  await waitFor('descriptors released', () => openFds(pid) <= before + 5, 10_000);
  if (isRoot()) {
    const q = await runCli(['mailq', '--config', site.configPath], USER);
    assert.equal(q.code, 0, q.stderr);
  }
});

test.run();
