// MDA delivery against a small real program standing in for procmail/dovecot-lda: what it
// is given (argv, environment, stdin) and how its exit is read.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { deliverMda, expandMdaArgs } from '../../src/deliver/mda.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/**
 * A fake MDA: `node fake-mda.mjs OUTDIR EXIT [sleep|spawn]` reads stdin, writes what it got to
 * OUTDIR/run.json, says something on stderr and exits with EXIT. "sleep" hangs instead;
 * "spawn" first starts a long-running child and writes its pid to OUTDIR/child.pid.
 */
function fakeMda(): { script: string; out: string } {
  const dir = tmpDir();
  const out = path.join(dir, 'out');
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777); // writable when it runs as nobody
  const script = writeFile(
    path.join(dir, 'fake-mda.mjs'),
    `
import fs from 'node:fs';
import { spawn } from 'node:child_process';
const [outDir, exit, mode] = process.argv.slice(2);
if (mode === 'spawn') {
  const c = spawn('sleep', ['60'], { stdio: 'ignore' });
  fs.writeFileSync(outDir + '/child.pid', String(c.pid));
}
if (mode === 'sleep' || mode === 'spawn') setInterval(() => {}, 1000);
else {
  const chunks = [];
  for await (const c of process.stdin) chunks.push(c);
  fs.writeFileSync(outDir + '/run.json', JSON.stringify({ argv: process.argv.slice(5), env: process.env, uid: process.getuid(), stdin: Buffer.concat(chunks).toString('latin1') }));
  process.stderr.write('fake mda: the reason\\nfor exit ' + exit + '\\n');
  process.exit(Number(exit));
}
`,
  );
  return { script, out };
}

interface Run {
  argv: string[];
  env: Record<string, string>;
  uid: number;
  stdin: string;
}
const readRun = (out: string): Run => JSON.parse(fs.readFileSync(path.join(out, 'run.json'), 'utf8')) as Run;
const body = (raw: string) => () => Readable.from([Buffer.from(raw)]);
const info = { sender: 'a@example.org', recipient: 'Bob+tag@example.org' };
const RAW = 'Subject: to the mda\r\n\r\nline 1\r\nFrom line 2\r\n';

test('exit 0 is ok; the MDA gets expanded arguments, a small environment and the message with trace headers in LF', async () => {
  const { script, out } = fakeMda();
  process.env['TIDEMAIL_TEST_SECRET'] = 'do not pass on';
  try {
    const r = await deliverMda([process.execPath, script, out, '0', 'pad', '-f', '{sender}', '-a', '{recipient}', '-d', '{user}', 'x{user}y'], body(RAW), info);
    assert.equal(r, { outcome: 'ok', message: `2.0.0 ${process.execPath} accepted the message` });
  } finally {
    delete process.env['TIDEMAIL_TEST_SECRET'];
  }
  const run = readRun(out);
  assert.equal(run.argv, ['-f', 'a@example.org', '-a', 'Bob+tag@example.org', '-d', 'Bob+tag', 'xBob+tagy']);
  assert.is(run.stdin, 'Return-Path: <a@example.org>\nDelivered-To: Bob+tag@example.org\nSubject: to the mda\n\nline 1\nFrom line 2\n');
  assert.is(run.env['SENDER'], 'a@example.org');
  assert.is(run.env['RECIPIENT'], 'Bob+tag@example.org');
  assert.is(run.env['TIDEMAIL_TEST_SECRET'], undefined);
  assert.ok(run.env['PATH']);
});

test('{user} is the account name when known; the null sender is MAILER-DAEMON', () => {
  const user = { name: 'bob', uid: 1000, gid: 1000, home: '/home/bob' };
  assert.equal(expandMdaArgs(['-f', '{sender}', '-d', '{user}', '{recipient}'], { sender: '', recipient: 'Bob+tag@example.org', user }), ['-f', 'MAILER-DAEMON', '-d', 'bob', 'Bob+tag@example.org']);
});

test('exit 75 and 71 are tempfail, 67 is permfail 5.1.1 with the MDA\'s words, 1 (not sysexits) is retried', async () => {
  const cases: [number, string, RegExp][] = [
    [75, 'tempfail', /^4\.3\.0 .* exited with 75 \(temporary failure\): fake mda: the reason for exit 75$/],
    [71, 'tempfail', /^4\.3\.0 .* exited with 71 \(system resource problem\)/],
    [67, 'permfail', /^5\.1\.1 .* exited with 67 \(user unknown\): fake mda: the reason for exit 67$/],
    [78, 'permfail', /^5\.3\.5 .* exited with 78 \(local configuration error\)/],
    [1, 'tempfail', /^4\.3\.0 .* exited with 1 \(not a sysexits code; will retry\): fake mda/],
  ];
  for (const [code, outcome, message] of cases) {
    const { script, out } = fakeMda();
    const r = await deliverMda([process.execPath, script, out, String(code)], body(RAW), info);
    assert.is(r.outcome, outcome, `exit ${code}: ${r.message}`);
    assert.match(r.message, message);
  }
});

test('a timeout kills the MDA and what it started, and is a tempfail', async () => {
  const { script, out } = fakeMda();
  const t0 = Date.now();
  const r = await deliverMda([process.execPath, script, out, '0', 'spawn'], body(RAW), info, 1000);
  assert.ok(Date.now() - t0 < 5000);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /^4\.4\.7 .* timed out after 1 s$/);
  const pid = Number(fs.readFileSync(path.join(out, 'child.pid'), 'utf8'));
  await waitFor('the grandchild to be gone', () => !alive(pid), 3000);
});

test('killed by a signal: tempfail', async () => {
  const { script, out } = fakeMda();
  const pending = deliverMda([process.execPath, script, out, '0', 'sleep'], body(RAW), info);
  await new Promise((r) => setTimeout(r, 300));
  const pid = findPid(script);
  process.kill(pid, 'SIGTERM');
  const r = await pending;
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /was killed by SIGTERM/);
});

test('a program that cannot be started is a tempfail', async () => {
  const r = await deliverMda(['/nonexistent/procmail', '-f', '{sender}'], body(RAW), info);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /^4\.3\.0 cannot run \/nonexistent\/procmail: .*ENOENT/);
});

test('a read error of the queued message kills the MDA before it sees an end: no half delivery', async () => {
  const { script, out } = fakeMda();
  const failing = () =>
    Readable.from(
      (async function* () {
        yield Buffer.from('Subject: half\r\n\r\n' + 'h'.repeat(300_000));
        await new Promise((r) => setTimeout(r, 100));
        throw new Error('queue file vanished');
      })(),
    );
  const r = await deliverMda([process.execPath, script, out, '0'], failing, info);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /cannot read the queued message: queue file vanished/);
  assert.not.ok(fs.existsSync(path.join(out, 'run.json')), 'the fake MDA never finished a delivery');
});

test('an MDA that exits 0 without reading the whole message is believed', async () => {
  const r = await deliverMda(['/bin/sh', '-c', 'exit 0'], body(RAW + 'x'.repeat(2_000_000) + '\r\n'), info);
  assert.is(r.outcome, 'ok');
});

test('as root with a user, the MDA runs as that user with their HOME', async () => {
  if (!isRoot()) return; // only root can switch users
  const { script, out } = fakeMda();
  fs.chmodSync(path.dirname(script), 0o755);
  const r = await deliverMda([process.execPath, script, out, '0'], body(RAW), { ...info, user: { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' } });
  assert.is(r.outcome, 'ok', r.message);
  const run = readRun(out);
  assert.is(run.uid, 65534);
  assert.equal([run.env['HOME'], run.env['USER'], run.env['LOGNAME']], ['/nonexistent', 'nobody', 'nobody']);
});

function alive(pid: number): boolean {
  try {
    // A zombie waiting for a reaper counts as gone.
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** The pid of the process running `script` (from /proc). */
function findPid(script: string): number {
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').includes(script)) return Number(p);
    } catch {
      /* gone meanwhile */
    }
  }
  throw new Error(`no process runs ${script}`);
}

test.run();
