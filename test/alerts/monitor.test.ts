// The alert monitor's timing with an injected clock (hours pass in no time): mail waiting past
// its threshold fires once, is repeated only after `repeat`, and clears when the mail is gone;
// `cleared = false` sends no cleared notice. The action is a real command writing to a file.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AlertMonitor, type AlertSources } from '../../src/alerts/monitor.js';
import { defaultAlerts } from '../../src/alerts/config.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const H = 3_600_000;

function setup(opts: { cleared: boolean }) {
  const dir = tmpDir();
  const out = path.join(dir, 'got.jsonl');
  const script = writeFile(path.join(dir, 'rec.mjs'), `import fs from 'node:fs'; let s=''; process.stdin.on('data',(d)=>s+=d); process.stdin.on('end',()=>fs.appendFileSync(${JSON.stringify(out)}, s));\n`);
  let now = Date.UTC(2026, 11, 3, 8, 0, 0);
  let queue: { msgid: string; sender: string; created: number }[] = [{ msgid: 'M1', sender: 'cron@pi.home.arpa', created: now }];
  const sources: AlertSources = {
    waiting: async (before) => {
      const old = queue.filter((m) => m.created < before);
      return { count: old.length, oldest: old[0] ? { ...old[0], lastError: 'route wan is offline' } : null };
    },
    routes: async () => [],
    fetches: () => [],
  };
  const m = new AlertMonitor({ ...defaultAlerts(), mailWaitingMs: 4 * H, repeatMs: 6 * H, cleared: opts.cleared, command: [process.execPath, script] }, sources, () => 'pi.home.arpa', () => now);
  const got = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { state: string; message: string; since: string }) : []);
  return { m, got, advance: (ms: number) => void (now += ms), empty: () => void (queue = []) };
}

test('mail waiting: once after the threshold, again only after repeat, cleared when gone', async () => {
  const s = setup({ cleared: true });
  await s.m.tick();
  s.advance(3 * H);
  await s.m.tick();
  assert.is(s.got().length, 0, 'not before 4h');
  s.advance(H + 1000);
  await s.m.tick();
  assert.equal(s.got().map((x) => x.state), ['firing']);
  assert.match(s.got()[0]!.message, /^1 message\(s\) waiting longer than 4h; oldest M1 from <cron@pi\.home\.arpa>, 4h old; last error: route wan is offline$/);
  for (let i = 0; i < 5; i++) {
    s.advance(H);
    await s.m.tick();
  }
  assert.equal(s.got().map((x) => x.state), ['firing'], 'nothing within repeat (6h)');
  s.advance(H);
  await s.m.tick();
  assert.equal(s.got().map((x) => x.state), ['firing', 'repeat']);
  assert.is(s.m.last?.results[0]?.ok, true);
  s.empty();
  // The queue is read at most every tenth of the threshold (capped at 10 min): not yet…
  s.advance(5 * 60_000);
  await s.m.tick();
  assert.equal(s.got().map((x) => x.state), ['firing', 'repeat']);
  s.advance(5 * 60_000);
  await s.m.tick();
  assert.equal(s.got().map((x) => x.state), ['firing', 'repeat', 'cleared']);
  assert.equal(s.m.active(), []);
});

test('cleared = false: no notice when it ends', async () => {
  const s = setup({ cleared: false });
  s.advance(5 * H);
  await s.m.tick();
  s.empty();
  s.advance(10 * 60_000);
  await s.m.tick();
  assert.equal(s.got().map((x) => x.state), ['firing']);
});

test('route failing: only while the route has mail queued; failures from before it was empty are history', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'got.jsonl');
  const script = writeFile(path.join(dir, 'rec.mjs'), `import fs from 'node:fs'; let s=''; process.stdin.on('data',(d)=>s+=d); process.stdin.on('end',()=>fs.appendFileSync(${JSON.stringify(out)}, s));\n`);
  let now = Date.UTC(2026, 11, 3, 8, 0, 0);
  const route = { name: 'isp', failingSince: now as number | null, lastError: 'cannot connect (ECONNREFUSED)', lastErrorAt: now as number | null, queued: 1 };
  const m = new AlertMonitor({ ...defaultAlerts(), routeFailingMs: H, repeatMs: 6 * H, command: [process.execPath, script] },
    { waiting: async () => ({ count: 0, oldest: null }), routes: async () => [{ ...route }], fetches: () => [] }, () => 'gw', () => now);
  const got = () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { state: string; message: string }) : []);
  now += H + 1000;
  route.lastErrorAt = now;
  await m.tick();
  assert.equal(got().map((x) => x.state), ['firing']);
  assert.match(got()[0]!.message, /^route isp: no delivery has worked for 1h; last error: cannot connect/);
  // The admin removes the mail: nothing to deliver is not a failing route.
  route.queued = 0;
  now += 60_000;
  await m.tick();
  assert.equal(got().map((x) => x.state), ['firing', 'cleared']);
  // New mail, but no failure since: the old failingSince does not fire at once.
  route.queued = 1;
  now += 2 * H;
  await m.tick();
  assert.equal(got().length, 2);
  // It fails again: counted from that failure, so an hour later.
  route.lastErrorAt = now;
  await m.tick();
  assert.is(got().length, 2);
  now += H;
  route.lastErrorAt = now;
  await m.tick();
  assert.equal(got().map((x) => x.state), ['firing', 'cleared', 'firing']);
});

test.after(() => cleanupTmp());
test.run();
