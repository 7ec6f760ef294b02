// src/cli/exit.ts quietWhenReaderGoes: a reader that stops early (`mailq | head -1`) is no error.
// Every command ends with the code it has when its whole output is read, and says nothing. Before,
// the EPIPE was uncaught whenever it came before the exit, and the same command exited 74 or 0
// by chance (mailq 1 of 10, tidemail log 4 of 10, queue list 6 of 10, check 3 of 3).

import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Db } from '../../src/queue/db.js';
import { BIN, makeSite, startDaemon } from '../helpers/daemon.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/** Runs the CLI into a pipe, closed after the first line when `firstLineOnly`, as `| head -1` does. */
function run(args: string[], firstLineOnly: boolean): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let code: number | null = null;
    p.stdout.on('data', (d) => {
      stdout += d;
      if (firstLineOnly && stdout.includes('\n')) p.stdout.destroy();
    });
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('exit', (c) => (code = c));
    p.on('close', () => resolve({ code, stdout, stderr }));
  });
}

test('a pipe closed after the first line: mailq, log, queue list, status and check keep their exit code and say nothing', async () => {
  const site = await makeSite();
  await (await startDaemon(site)).stop(); // creates the queue database
  // 3000 deferred messages and their history: mailq ~630 KB, tidemail log ~880 KB, far more than a pipe holds.
  const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'));
  const t = Date.now() - 600_000;
  const messages: string[] = [];
  const recipients: string[] = [];
  const events: string[] = [];
  for (let i = 0; i < 3000; i++) {
    const id = `AAAAAAAA${i.toString(16).toUpperCase().padStart(8, '0')}`;
    messages.push(`('${id}', 'root@tidemail.test', ${t + i}, 300, 'sendmail')`);
    recipients.push(`('${id}0000', '${id}', 'far@remote.example', 'deferred', 1, ${t + 86_400_000}, '4.4.1 connection refused')`);
    events.push(`(${t + i}, '${id}', NULL, 'info', 'accepted', 'from=<root@tidemail.test> via=sendmail uid=0 nrcpt=1 size=300')`);
    events.push(`(${t + i}, '${id}', '${id}0000', 'info', 'deferred', 'to=<far@remote.example> route=isp result="4.4.1 connection refused" attempts=1')`);
  }
  await db.exec(`BEGIN;
    INSERT INTO messages (id, sender, created, size, via) VALUES ${messages.join(',')};
    INSERT INTO recipients (env_id, msgid, address, status, attempts, next_attempt, last_error) VALUES ${recipients.join(',')};
    INSERT INTO events (t, msgid, env_id, level, event, fields) VALUES ${events.join(',')};
    COMMIT;`);
  await db.close();
  const commands = [['mailq'], ['log', '--since', '1h'], ['log', '--since', '1h', '--json'], ['queue', 'list'], ['status'], ['check']];
  for (const command of commands) {
    const args = [...command, '--config', site.configPath];
    const whole = await run(args, false);
    const head = await run(args, true);
    const what = `tidemail ${command.join(' ')}`;
    assert.is(head.stderr, '', `${what} | head -1 said something`);
    assert.is(head.code, whole.code, `${what} | head -1 exited ${head.code}, read to the end ${whole.code}`);
    assert.ok(head.stdout.length > 0, `${what} wrote nothing`);
    if (command[0] === 'mailq' || command[0] === 'log') {
      assert.is(whole.code, 0, `${what}: ${whole.stderr}`);
      assert.ok(whole.stdout.length > 256 * 1024, `${what}: only ${whole.stdout.length} bytes, not enough to fill a pipe`);
      assert.ok(head.stdout.length < whole.stdout.length, `${what}: the reader took it all, the pipe was never closed on it`);
    }
  }
});

test('help into a reader that is already gone: no stack trace, exit 0', async () => {
  // `tidemail help | true`: true may exit before we write; before, node printed its stack trace and exited 1.
  const p = spawn(process.execPath, [BIN, 'help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout.destroy();
  let stderr = '';
  p.stderr.on('data', (d) => (stderr += d));
  const code = await new Promise<number | null>((resolve) => p.on('close', (c) => resolve(c)));
  assert.is(stderr, '');
  assert.is(code, 0);
});

test.run();
