// Maildir delivery, read back from the file system: exact content, names, nothing left in tmp/.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { deliverMaildir } from '../../src/deliver/maildir.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const RAW = 'From: a@example.org\r\nTo: u@example.org\r\nSubject: hello\r\n\r\nline 1\r\nFrom the start\r\n\r\nlast line\r\n';
const STORED = 'Return-Path: <a@example.org>\nDelivered-To: u@example.org\nFrom: a@example.org\nTo: u@example.org\nSubject: hello\n\nline 1\nFrom the start\n\nlast line\n';
const info = { sender: 'a@example.org', recipient: 'u@example.org' };
const NAME = /^(\d+)\.M(\d{1,6})P(\d+)Q(\d+)\.[^/:,]+,S=(\d+)$/;

const body = (raw: string | Buffer, chunk = 1 << 16) => () => {
  const b = Buffer.from(raw);
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += chunk) parts.push(b.subarray(i, i + chunk));
  return Readable.from(parts);
};
const files = (d: string) => fs.readdirSync(d).sort();

test('creates cur/new/tmp (0700) and stores the message in new/ with trace headers and LF line ends', async () => {
  const md = path.join(tmpDir(), 'Maildir');
  const r = await deliverMaildir(md, body(RAW), info);
  assert.is(r.outcome, 'ok', r.message);
  for (const sub of ['cur', 'new', 'tmp']) assert.is(fs.statSync(path.join(md, sub)).mode & 0o777, 0o700, sub);
  assert.equal(files(path.join(md, 'tmp')), []);
  assert.equal(files(path.join(md, 'cur')), []);
  const [name, ...rest] = files(path.join(md, 'new'));
  assert.is(rest.length, 0);
  const m = NAME.exec(name!);
  assert.ok(m, name);
  assert.is(Number(m![3]), process.pid);
  assert.ok(Math.abs(Number(m![1]) - Date.now() / 1000) < 60);
  const stored = fs.readFileSync(path.join(md, 'new', name!), 'latin1');
  assert.is(stored, STORED);
  assert.is(Number(m![5]), Buffer.byteLength(stored), 'S= is the size on disk');
  assert.ok(r.message.includes(name!), r.message);
});

test('CRLF split across chunks, 8-bit bytes and the null sender come out right', async () => {
  const md = tmpDir();
  const raw = Buffer.concat([Buffer.from('Subject: \xe9t\xe9\r\n\r\n', 'latin1'), Buffer.from([0xff, 0x00, 0x0d, 0x0a]), Buffer.from('bare\rCR\r\n')]);
  const r = await deliverMaildir(md, body(raw, 1), { sender: '', recipient: 'u@example.org' });
  assert.is(r.outcome, 'ok', r.message);
  const [name] = files(path.join(md, 'new'));
  const stored = fs.readFileSync(path.join(md, 'new', name!));
  const want = Buffer.concat([Buffer.from('Return-Path: <>\nDelivered-To: u@example.org\nSubject: \xe9t\xe9\n\n', 'latin1'), Buffer.from([0xff, 0x00, 0x0a]), Buffer.from('bare\rCR\n')]);
  assert.is(stored.toString('hex'), want.toString('hex'));
});

test('50 deliveries in parallel get 50 unique names and intact files; tmp/ ends empty', async () => {
  const md = tmpDir();
  const results = await Promise.all(
    Array.from({ length: 50 }, (_, i) => deliverMaildir(md, body(`Subject: n${i}\r\n\r\n${'x'.repeat(i * 1000)}\r\n`, 4096), { sender: 's@example.org', recipient: `r${i}@example.org` })),
  );
  assert.ok(results.every((r) => r.outcome === 'ok'), JSON.stringify(results.find((r) => r.outcome !== 'ok')));
  const names = files(path.join(md, 'new'));
  assert.is(names.length, 50);
  assert.is(new Set(names.map((n) => NAME.exec(n)![4])).size, 50, 'the Q counter differs for each');
  const seen = new Set<number>();
  for (const n of names) {
    const text = fs.readFileSync(path.join(md, 'new', n), 'utf8');
    const i = Number(/^Delivered-To: r(\d+)@/m.exec(text)![1]);
    seen.add(i);
    assert.is(text, `Return-Path: <s@example.org>\nDelivered-To: r${i}@example.org\nSubject: n${i}\n\n${'x'.repeat(i * 1000)}\n`);
    assert.is(Number(NAME.exec(n)![5]), Buffer.byteLength(text));
  }
  assert.is(seen.size, 50);
  assert.equal(files(path.join(md, 'tmp')), []);
});

test('a read error of the queued message: tempfail, and nothing in tmp/ or new/', async () => {
  const md = tmpDir();
  const failing = () =>
    Readable.from(
      (async function* () {
        yield Buffer.from('Subject: half\r\n\r\n' + 'y'.repeat(100_000));
        throw new Error('queue file vanished');
      })(),
    );
  const r = await deliverMaildir(md, failing, info);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /^4\.3\.0 cannot read the queued message: queue file vanished/);
  assert.equal(files(path.join(md, 'tmp')), []);
  assert.equal(files(path.join(md, 'new')), []);
});

test('a Maildir that cannot be created is a tempfail naming the path, not a bounce', async () => {
  const file = writeFile(path.join(tmpDir(), 'plain-file'), 'x');
  const r = await deliverMaildir(path.join(file, 'Maildir'), body(RAW), info);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /^4\.2\.0 cannot create Maildir .*plain-file\/Maildir: .*ENOTDIR/);
});

test('existing Maildir directories are used as they are', async () => {
  const md = tmpDir();
  for (const sub of ['cur', 'new', 'tmp']) fs.mkdirSync(path.join(md, sub), { mode: 0o750 });
  fs.chmodSync(path.join(md, 'new'), 0o750);
  writeFile(path.join(md, 'cur', '1.M1P1.host:2,S'), 'old\n', 0o600);
  const r = await deliverMaildir(md, body(RAW), info);
  assert.is(r.outcome, 'ok');
  assert.is(fs.statSync(path.join(md, 'new')).mode & 0o777, 0o750);
  assert.equal(files(path.join(md, 'cur')), ['1.M1P1.host:2,S']);
  assert.is(files(path.join(md, 'new')).length, 1);
});

test('as root, what we create belongs to the user', async () => {
  if (!isRoot()) return; // only root can give files away
  const home = tmpDir();
  const md = path.join(home, 'Mail', 'inbox');
  const r = await deliverMaildir(md, body(RAW), { ...info, user: { name: 'nobody', uid: 65534, gid: 65534, home } });
  assert.is(r.outcome, 'ok', r.message);
  const [name] = files(path.join(md, 'new'));
  for (const p of [path.join(home, 'Mail'), md, path.join(md, 'new'), path.join(md, 'tmp'), path.join(md, 'cur'), path.join(md, 'new', name!)]) {
    const st = fs.statSync(p);
    assert.equal([st.uid, st.gid], [65534, 65534], p);
  }
  assert.is(fs.statSync(home).uid, 0, 'the existing parent is left alone');
  assert.is(fs.statSync(path.join(md, 'new', name!)).mode & 0o777, 0o600);
});

test.run();
