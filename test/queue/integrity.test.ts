// A damaged queue.sqlite is never started on and never replaced by an empty queue: truncated,
// garbage and corrupted-page files make the daemon (and mailq) refuse with the path and the fix,
// the file left untouched; `tidemail queue salvage` copies what can be read into a new queue.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, REPO, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(cleanupTmp);

const FILLER = 'the quick brown fox jumps over the lazy dog 0123456789\r\n'.repeat(50); // ~2.8 KB
const body = (tag: string) => `Subject: ${tag}\r\nX-Tag: ${tag}\r\n\r\n${FILLER}`;

/** A site whose queue holds `n` messages for a host without a route (they stay queued). */
async function seeded(n: number): Promise<{ site: TestSite; file: string; tags: string[] }> {
  const site = await makeSite();
  const d = await startDaemon(site);
  const tags: string[] = [];
  for (let i = 0; i < n; i++) {
    const tag = `m${String(i).padStart(2, '0')}`;
    const r = await sendMessage(site.port, 'a@tidemail.test', [`${tag}@remote.example`], body(tag));
    assert.match(r, /^250 /);
    tags.push(tag);
  }
  assert.equal(await d.stop(), 0);
  return { site, file: path.join(site.stateDir, 'queue.sqlite'), tags };
}

const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const daemonOnce = (site: TestSite) => runCli(['daemon', '--config', site.configPath], { timeoutMs: 10_000 });

function assertRefused(r: { code: number | null; stderr: string }, file: string, code: number, what: RegExp): void {
  assert.equal(r.code, code, r.stderr);
  assert.ok(r.stderr.includes(file), `the message names ${file}:\n${r.stderr}`);
  assert.match(r.stderr, what);
  assert.match(r.stderr, /tidemail queue salvage|from a backup/i);
  assert.not.match(r.stderr, /\n\s+at /, 'no stack trace');
}

test('a 0-byte queue.sqlite that held mail: refused (74), the file untouched', async () => {
  const { site, file } = await seeded(1);
  fs.truncateSync(file, 0);
  const r = await daemonOnce(site);
  assertRefused(r, file, 74, /empty|truncated/i);
  assert.equal(fs.statSync(file).size, 0);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assertRefused(q, file, 74, /empty|truncated/i);
});

test('garbage in queue.sqlite: refused (74) with the path, the file untouched', async () => {
  const { site, file } = await seeded(1);
  fs.writeFileSync(file, crypto.randomBytes(8192));
  const before = sha(file);
  const r = await daemonOnce(site);
  assertRefused(r, file, 74, /not an SQLite database/i);
  assert.equal(sha(file), before);
});

test('a corrupted middle page: refused (74); queue salvage recovers the readable messages and they are delivered', async () => {
  const { site, file, tags } = await seeded(30);
  // Overwrite the page holding one message's body (found by its tag) with random bytes.
  const buf = fs.readFileSync(file);
  const pageSize = buf.readUInt16BE(16) === 1 ? 65536 : buf.readUInt16BE(16);
  const at = buf.indexOf('X-Tag: m15');
  assert.ok(at > pageSize, 'the tag is in the file');
  const page = Math.floor(at / pageSize);
  crypto.randomBytes(pageSize).copy(buf, page * pageSize);
  fs.writeFileSync(file, buf);
  const before = sha(file);
  const r = await daemonOnce(site);
  assertRefused(r, file, 74, /damaged|corrupt/i);
  assert.equal(sha(file), before, 'the refused file is not touched');

  const s = await runCli(['queue', 'salvage', '--config', site.configPath]);
  assert.equal(s.code, 0, s.stderr + s.stdout);
  assert.not.match(s.stderr, /\n\s+at /);
  const saved = Number(/salvaged (\d+) of (\d+) message/.exec(s.stdout)?.[1]);
  assert.ok(saved >= 20 && saved < 30, s.stdout);
  const broken = fs.readdirSync(site.stateDir).filter((n) => /^queue\.sqlite\.broken-[0-9TZ]+$/.test(n));
  assert.equal(broken.length, 1, fs.readdirSync(site.stateDir).join(' '));
  assert.equal(sha(path.join(site.stateDir, broken[0]!)), before, 'the damaged file is kept as it was');
  assert.match(s.stdout, new RegExp(broken[0]!.replaceAll('.', '\\.')));
  // What could be read of the lost messages is kept for a human.
  const lost = /(\d+) message\(s\) could not be recovered whole/.exec(s.stdout);
  assert.ok(lost, s.stdout);
  const partial = fs.readdirSync(site.stateDir).find((n) => n.startsWith('salvage-'))!;
  assert.equal(fs.readdirSync(path.join(site.stateDir, partial)).length, Number(lost![1]));

  const sh = await startSmarthost();
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  // They were queued with no route: try them now rather than at their retry time.
  assert.equal((await runCli(['queue', 'flush', '--config', site.configPath])).code, 0);
  const got = await sh.waitForMessages(saved, 20_000).catch((e: Error) => {
    throw new Error(`${e.message}\n${s.stdout}\n${d.logs().slice(-3000)}`);
  });
  const delivered = got.map((m) => /X-Tag: (\S+)/.exec(m.raw.toString())![1]!);
  assert.ok(!delivered.includes('m15'), 'the message on the overwritten page is not delivered half');
  for (const m of got) {
    const tag = /X-Tag: (\S+)/.exec(m.raw.toString())![1]!;
    assert.ok(tags.includes(tag));
    assert.ok(m.raw.toString().endsWith(FILLER), `${tag} arrives whole`);
  }
  assert.equal(new Set(delivered).size, saved);
  await d.stop();
  await sh.close();
});

test('tidemail check reports a damaged queue (FAIL naming the file and salvage) and a sound one (ok)', async () => {
  const { site, file } = await seeded(3);
  const findings = async () => {
    const r = await runCli(['check', '--json', '--config', site.configPath], { timeoutMs: 60_000 });
    return { code: r.code, list: (JSON.parse(r.stdout) as { findings: { area: string; level: string; message: string; fix?: string }[] }).findings };
  };
  const good = await findings();
  assert.ok(good.list.some((f) => f.area === 'state dir' && f.level === 'ok' && /queue\.sqlite.*3 message/.test(f.message)), JSON.stringify(good.list, null, 1));
  const buf = fs.readFileSync(file);
  crypto.randomBytes(4096).copy(buf, 4096 * 2);
  fs.writeFileSync(file, buf);
  const before = sha(file);
  const bad = await findings();
  const f = bad.list.find((x) => x.area === 'state dir' && x.level === 'fail' && x.message.includes(file));
  assert.ok(f, JSON.stringify(bad.list, null, 1));
  assert.match(f!.fix ?? '', /tidemail queue salvage/);
  assert.equal(bad.code, 69);
  assert.equal(sha(file), before);
});

test('brand-new state dir and a 0-byte file never initialised: the daemon starts', async () => {
  const site = await makeSite();
  fs.mkdirSync(site.stateDir, { recursive: true });
  fs.writeFileSync(path.join(site.stateDir, 'queue.sqlite'), '');
  const d = await startDaemon(site);
  assert.equal(await d.stop(), 0);
});

test('queue salvage reads a file of the oldest schema shape (no events table, fewer columns)', async () => {
  const site = await makeSite();
  fs.mkdirSync(site.stateDir, { recursive: true });
  fs.copyFileSync(path.join(REPO, 'test', 'fixtures', 'queue-7cd1f98.sqlite'), path.join(site.stateDir, 'queue.sqlite'));
  const s = await runCli(['queue', 'salvage', '--config', site.configPath]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /salvaged 2 of 2 message\(s\) \(3 recipient\(s\)\)/);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stdout, /carol@example\.org/);
});

test('queue salvage refuses while the daemon runs', async () => {
  const site = await makeSite();
  const d = await startDaemon(site);
  const s = await runCli(['queue', 'salvage', '--config', site.configPath]);
  assert.equal(s.code, 75, s.stderr);
  assert.match(s.stderr, /stop the daemon/);
  await d.stop();
});

test.run();
