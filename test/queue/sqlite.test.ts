// The SQLite store on a real file: group commits, body round trips, hostile text in addresses.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

async function readAll(s: NodeJS.ReadableStream): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

test('quotes and SQL in addresses are stored as text, byte-exact bodies of any size come back', async () => {
  const store = await SqliteQueueStore.open(tmpDir(), Date.now);
  const hostile = "o'brien'); DROP TABLE messages; --@remote.example";
  const spool = store.openMessage();
  const body = Buffer.alloc(200_000 + 7);
  for (let i = 0; i < body.length; i++) body[i] = (i * 31) & 0xff;
  for (let i = 0; i < body.length; i += 10_000) await spool.write(body.subarray(i, i + 10_000));
  await spool.commit({ sender: hostile, recipients: ["x'y@remote.example", 'z@remote.example'], via: 'test' });
  const [m] = await store.listMessages();
  assert.equal(m!.sender, hostile);
  assert.equal(m!.recipients.map((r) => r.recipient), ["x'y@remote.example", 'z@remote.example']);
  assert.equal((await readAll(store.readBody(m!.msgid))).equals(body), true);
  await store.close();
});

test('concurrent commits share transactions (group commit)', async () => {
  const store = await SqliteQueueStore.open(tmpDir(), Date.now);
  const before = store.writer.commits;
  await Promise.all(Array.from({ length: 100 }, async (_, i) => {
    const s = store.openMessage();
    await s.write(Buffer.from(`Subject: ${i}\r\n\r\nx\r\n`));
    await s.commit({ sender: 'a@b.example', recipients: ['c@d.example'], via: 'test' });
  }));
  const commits = store.writer.commits - before;
  assert.equal((await store.listMessages()).length, 100);
  assert.ok(commits < 100, `100 messages took ${commits} commits`);
  await store.close();
});

test('a rolled-back spool leaves nothing; a reopen removes chunks of unfinished messages', async () => {
  const dir = tmpDir();
  const store = await SqliteQueueStore.open(dir, Date.now);
  const a = store.openMessage();
  await a.write(Buffer.alloc(300_000, 65)); // several chunks already in the table
  await a.rollback();
  const b = store.openMessage();
  await b.write(Buffer.alloc(300_000, 66)); // never committed: a session that died
  await store.close();
  const again = await SqliteQueueStore.open(dir, Date.now);
  assert.equal((await again.listMessages()).length, 0);
  // Reading a body that is gone is an error, never an empty message.
  await readAll(again.readBody(b.msgid)).then(
    () => assert.unreachable('read a removed body'),
    (err: Error) => assert.match(err.message, /has no body/),
  );
  await again.close();
});

test.run();
