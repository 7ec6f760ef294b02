// src/main.ts: a command's whole output reaches the reader before the process exits. Writes to a
// pipe the reader has not emptied yet are queued inside node; exiting at once (as commands do, so
// no open handle keeps them alive) cut `tidemail log --json | jq` at what the pipe had taken.

import { spawn } from 'node:child_process';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Db } from '../src/queue/db.js';
import { BIN, makeSite, startDaemon } from './helpers/daemon.js';
import { cleanupTmp } from './helpers/tmp.js';

test.after(() => cleanupTmp());

/** Runs the CLI and collects stdout until the pipe closes (not only until the process exits). */
function cliOutput(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let code: number | null = null;
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('exit', (c) => (code = c));
    p.on('close', () => resolve({ code, stdout, stderr }));
  });
}

test('tidemail log --json over a long history: the whole JSON document reaches the pipe', async () => {
  const site = await makeSite();
  await (await startDaemon(site)).stop(); // creates the queue database
  const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'));
  const t = Date.now() - 600_000;
  const rows: string[] = [];
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const id = `AAAAAAAA${i.toString(16).toUpperCase().padStart(8, '0')}`;
    rows.push(`(${t + i}, '${id}', NULL, 'info', 'accepted', 'from=<root@tidemail.test> via=sendmail uid=0 nrcpt=1 size=300')`);
    rows.push(`(${t + i}, '${id}', '${id}0000', 'info', 'deferred', 'to=<far@remote.example> route=isp result="4.4.1 connection refused" attempts=1')`);
  }
  await db.exec(`BEGIN; INSERT INTO events (t, msgid, env_id, level, event, fields) VALUES ${rows.join(',\n')}; COMMIT;`);
  await db.close();
  const r = await cliOutput(['log', '--since', '1h', '--json', '--config', site.configPath]);
  assert.is(r.code, 0, r.stderr);
  assert.ok(r.stdout.length > 256 * 1024, `only ${r.stdout.length} bytes: not enough to fill a pipe`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout);
  } catch (err) {
    assert.unreachable(`the output (${r.stdout.length} bytes) is not one JSON document: ${(err as Error).message}`);
  }
  assert.ok(JSON.stringify(parsed).includes(`AAAAAAAA${(N - 1).toString(16).toUpperCase().padStart(8, '0')}`), 'the last message is in it');
});

test.run();
