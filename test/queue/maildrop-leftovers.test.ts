// What is left in the maildrop besides messages is bounded (src/queue/maildrop-leftovers.ts):
// unused control proofs (.who-*) go after 10 minutes, a dead sendmail's .tmp-* after a day,
// refused files set aside as .bad-* after 7 days or beyond 20 per owner / 100 in all, with a log
// line, at most one sweep a minute. The real pickup (pickupMaildrop) on a real directory and
// queue; its clock is stepped instead of waiting: file ages are ctimes, which a test cannot set.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { makeProof } from '../../src/control/peer.js';
import { pickupMaildrop } from '../../src/queue/maildrop.js';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import { makeSite } from '../helpers/daemon.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';
import { logged } from '../helpers/stderr.js';

test.after(() => cleanupTmp());

const MIN = 60_000;
const DAY = 86_400_000;

/** A site with its maildrop, and a pickup whose clock reads `t0 + offset`; returns the log lines of each scan. */
async function dropSite() {
  const site = await makeSite();
  const drop = path.join(site.stateDir, 'maildrop');
  fs.mkdirSync(drop, { recursive: true, mode: 0o1733 });
  const config = loadConfig(site.configPath);
  const store = await SqliteQueueStore.open(site.stateDir, Date.now);
  const t0 = Date.now();
  const scan = async (offsetMs: number): Promise<string> => {
    const { lines } = await logged(() =>
      pickupMaildrop(config, store, { submit: async () => assert.unreachable('nothing here is a message'), now: () => t0 + offsetMs }),
    );
    return lines;
  };
  const names = () => fs.readdirSync(drop).sort();
  return { site, drop, scan, names, close: () => store.close() };
}

test('control proofs (.who-*) made and never used are removed after 10 minutes, not before', async () => {
  const s = await dropSite();
  // The real client's proofs, as `tidemail log` makes them; their done() is never called.
  const proofs = [makeProof(s.site.stateDir).name, makeProof(s.site.stateDir).name].sort();
  assert.equal(s.names(), proofs);
  assert.is(await s.scan(5 * MIN), '');
  assert.equal(s.names(), proofs, 'a proof younger than 10 minutes may still be in use');
  const lines = await s.scan(11 * MIN);
  assert.equal(s.names(), []);
  assert.match(lines, /maildrop: removed unused proof files of control clients count=2 why="older than 10 min"/);
  await s.close();
});

test('a clock stepped back does not stop the sweep until it catches up again', async () => {
  const s = await dropSite();
  await s.scan(365 * DAY); // a wrong clock, a year ahead; then NTP sets it right
  const proof = makeProof(s.site.stateDir).name;
  assert.equal(s.names(), [proof]);
  assert.match(await s.scan(11 * MIN), /maildrop: removed unused proof files of control clients count=1/);
  assert.equal(s.names(), []);
  await s.close();
});

test('a dead sendmail\'s .tmp-* file is removed after a day', async () => {
  const s = await dropSite();
  fs.writeFileSync(path.join(s.drop, '.tmp-0123456789abcdef01234567'), 'half a message');
  await s.scan(23 * 60 * MIN);
  assert.equal(s.names(), ['.tmp-0123456789abcdef01234567']);
  assert.match(await s.scan(25 * 60 * MIN), /maildrop: removed unfinished files of sendmail runs that died count=1/);
  assert.equal(s.names(), []);
  await s.close();
});

test('a refused file is set aside as .bad-*, kept 7 days, then removed with a log line; other dot names are set aside too', async () => {
  const s = await dropSite();
  fs.writeFileSync(path.join(s.drop, '00000000000000000000b0b0'), 'no envelope at all\r\n');
  fs.writeFileSync(path.join(s.drop, '.hidden'), 'before, any dot name stayed for ever');
  const first = await s.scan(0);
  assert.match(first, /maildrop: refused .*00000000000000000000b0b0.*malformed.*set aside as \.bad-00000000000000000000b0b0/);
  assert.match(first, /maildrop: refused .*\.hidden.*set aside as \.bad-\.hidden/);
  assert.equal(s.names(), ['.bad-.hidden', '.bad-00000000000000000000b0b0']);
  await s.scan(6 * DAY);
  assert.is(s.names().length, 2, 'kept for the administrator for a week');
  const lines = await s.scan(8 * DAY);
  assert.equal(s.names(), []);
  assert.match(lines, /maildrop: removed set-aside \(refused\) files count=2 why="kept 7 days"/);
  await s.close();
});

test('set-aside files are capped: 20 of one owner, the oldest go first', async () => {
  const s = await dropSite();
  for (let i = 0; i < 25; i++) fs.writeFileSync(path.join(s.drop, `.bad-${String(i).padStart(24, '0')}`), 'x');
  const lines = await s.scan(0);
  assert.is(s.names().length, 20);
  assert.match(lines, /maildrop: removed set-aside \(refused\) files count=5 why="more than 20 of one owner, oldest first"/);
  for (let i = 25; i < 30; i++) fs.writeFileSync(path.join(s.drop, `.bad-${String(i).padStart(24, '0')}`), 'x');
  await s.scan(30_000);
  assert.is(s.names().length, 25, 'one sweep a minute: a scan for each poke does not lstat every leftover');
  await s.scan(61_000);
  assert.is(s.names().length, 20);
  await s.close();
});

(isRoot() ? test : test.skip)('one user flooding .bad-* files loses only their own; beyond 100 in all the oldest go (needs root to own files as several users)', async () => {
  const s = await dropSite();
  const make = (uid: number, n: number) => {
    for (let i = 0; i < n; i++) {
      const file = path.join(s.drop, `.bad-u${uid}-${i}`);
      fs.writeFileSync(file, 'x');
      fs.chownSync(file, uid, uid);
    }
  };
  make(2, 3); // the victim's, made first: the oldest
  make(1, 40); // the flooder's
  await s.scan(0);
  const owners = () => s.names().map((n) => fs.lstatSync(path.join(s.drop, n)).uid);
  assert.is(owners().filter((u) => u === 2).length, 3, 'the other user\'s files stay');
  assert.is(owners().filter((u) => u === 1).length, 20);
  for (let uid = 3; uid <= 7; uid++) make(uid, 20);
  const lines = await s.scan(2 * MIN); // the next sweep: at most one a minute
  assert.is(s.names().length, 100);
  assert.match(lines, /maildrop: removed set-aside \(refused\) files count=23 why="more than 100 in all, oldest first"/);
  await s.close();
});

test('a refused entry is set aside without replacing anything, and once: not over another .bad-X, nor refused again at every scan (.bad-X a directory, a 251-byte name, a name that is not UTF-8)', async () => {
  const s = await dropSite();
  const at = (name: string | Buffer) => (typeof name === 'string' ? path.join(s.drop, name) : Buffer.concat([Buffer.from(s.drop + path.sep), name]));
  fs.writeFileSync(at('.bad-victim'), "another user's refused file");
  fs.writeFileSync(at('victim'), 'rename(2) would put this in its place');
  fs.mkdirSync(at('.bad-dir'));
  fs.writeFileSync(path.join(s.drop, '.bad-dir', 'x'), '');
  fs.writeFileSync(at('dir'), 'x');
  fs.writeFileSync(at('a'.repeat(251)), 'x');
  fs.writeFileSync(at(Buffer.from([0x7a, 0xff])), 'x');
  fs.writeFileSync(at(Buffer.concat([Buffer.from('.bad-'), Buffer.from([0xfe])])), 'x');
  const first = await s.scan(0);
  assert.is(fs.readFileSync(at('.bad-victim'), 'utf8'), "another user's refused file");
  // All five refused (their log lines come one per reason a minute: log/repeats.ts), beside the two .bad-* there were.
  assert.is(fs.readdirSync(s.drop).length, 7, first);
  assert.not.match(first, /not set aside/);
  const raw = fs.readdirSync(s.drop, { encoding: 'buffer' });
  assert.ok(raw.every((b) => b.toString('utf8').startsWith('.bad-') && Buffer.from(b.toString('utf8')).equals(b)), 'all set aside, under names we can say');
  assert.is(await s.scan(2 * MIN), '', 'nothing is refused again');
  await s.scan(8 * DAY);
  assert.equal(s.names(), ['.bad-dir'], 'all swept after 7 days but the directory with something in it');
  await s.close();
});

test.run();
