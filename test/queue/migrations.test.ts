// Upgrades: queue files written by earlier builds (kept under test/fixtures/, made by the code of
// those commits) are migrated at open and all their mail is delivered; a file from a newer build
// is refused, untouched. The same numbered migrations guard fetch.sqlite and greylist.sqlite.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import sqlite3 from 'sqlite3';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Greylist } from '../../src/checks/greylist.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { StateError } from '../../src/queue/state-error.js';
import { makeSite, REPO, runCli, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(cleanupTmp);

const FIXTURES = path.join(REPO, 'test', 'fixtures');
const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

function sql<T>(file: string, q: string): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const db = new sqlite3.Database(file, (err) => {
      if (err) return reject(err);
      db.all(q, (e, rows) => db.close(() => (e ? reject(e) : resolve(rows as T[]))));
    });
  });
}

for (const fixture of ['queue-0.1.0.sqlite', 'queue-7cd1f98.sqlite']) {
  test(`${fixture}: migrated at open, every message delivered to the smarthost`, async () => {
    const sh = await startSmarthost();
    const site = await makeSite();
    fs.mkdirSync(site.stateDir, { recursive: true });
    fs.copyFileSync(path.join(FIXTURES, fixture), path.join(site.stateDir, 'queue.sqlite'));
    // mailq without a daemon reads the old file too.
    const q = await runCli(['mailq', '--config', site.configPath]);
    assert.equal(q.code, 0, q.stderr);
    assert.match(q.stdout, /2 Requests/);
    site.route('isp', smarthostRoute(sh.port));
    const d = await startDaemon(site);
    const got = await sh.waitForMessages(2, 15_000).catch((e: Error) => {
      throw new Error(`${e.message}\n${d.logs()}`);
    });
    const rcpts = got.flatMap((m) => m.to).sort();
    assert.equal(rcpts, ['alice@example.org', 'bob@example.org', 'carol@example.org']);
    const two = got.find((m) => /fixture two/.test(m.raw.toString()))!;
    assert.ok(two.raw.toString().includes('second message, two chunks long.\r\n'.repeat(2200)), 'the two-chunk body arrives whole');
    await d.waitForLog(/delivered|sent/i);
    assert.equal(await d.stop(), 0);
    const [v] = await sql<{ user_version: number }>(path.join(site.stateDir, 'queue.sqlite'), 'PRAGMA user_version');
    assert.ok(v!.user_version >= 1);
    await sh.close();
  });
}

test('a queue from a newer tidemail: refused (78) with the path, the file untouched, no empty queue', async () => {
  const site = await makeSite();
  fs.mkdirSync(site.stateDir, { recursive: true });
  const file = path.join(site.stateDir, 'queue.sqlite');
  fs.copyFileSync(path.join(FIXTURES, 'queue-0.1.0.sqlite'), file);
  await sql(file, 'PRAGMA user_version = 999');
  const before = sha(file);
  const r = await runCli(['daemon', '--config', site.configPath], { timeoutMs: 10_000 });
  assert.equal(r.code, 78, r.stderr);
  assert.ok(r.stderr.includes(file), r.stderr);
  assert.match(r.stderr, /newer tidemail/);
  assert.not.match(r.stderr, /\n\s+at /);
  assert.equal(sha(file), before);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assert.equal(q.code, 78, q.stderr);
});

test('fetch.sqlite and greylist.sqlite from a newer tidemail are refused with the path', async () => {
  const dir = tmpDir();
  const u = await UidlStore.open(dir);
  await u.close();
  const fetchFile = path.join(dir, 'fetch.sqlite');
  await sql(fetchFile, 'PRAGMA user_version = 999');
  const e1 = await UidlStore.open(dir).then(() => null, (e: unknown) => e);
  assert.ok(e1 instanceof StateError, String(e1));
  assert.equal((e1 as StateError).exitCode, 78);
  assert.ok((e1 as Error).message.includes(fetchFile));

  const grey = path.join(dir, 'greylist.sqlite');
  const g = await Greylist.open(grey, { delayMs: 1000, expireMs: 60_000, passExpireMs: 60_000 } as never);
  await g.close();
  const [v] = await sql<{ user_version: number }>(grey, 'PRAGMA user_version');
  assert.equal(v!.user_version, 1);
  await sql(grey, 'PRAGMA user_version = 999');
  const e2 = await Greylist.open(grey, { delayMs: 1000, expireMs: 60_000, passExpireMs: 60_000 } as never).then(() => null, (e: unknown) => e);
  assert.ok(e2 instanceof StateError, String(e2));
  assert.ok((e2 as Error).message.includes(grey));
});

test.run();
