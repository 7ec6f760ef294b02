// raceSetups (src/deliver/setup-race.ts) with set-ups that are plain promises settled by the
// test: who starts when, who wins, what becomes a spare, and which failure is reported.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { raceSetups, type RaceOptions } from '../../src/deliver/setup-race.js';

interface Setup {
  hedge: number;
  at: number;
  resolve(v: string): void;
  reject(e: unknown): void;
}

const stall = Object.assign(new Error('stalled'), { code: 'HEDGE' });

function harness(over: Partial<RaceOptions<string>> = {}) {
  const setups: Setup[] = [];
  const spares: string[] = [];
  const starts: string[] = [];
  const begin = Date.now();
  const start = (hedge: number) =>
    new Promise<string>((resolve, reject) => setups.push({ hedge, at: Date.now() - begin, resolve, reject }));
  const race = raceSetups(start, {
    staggerMs: 100,
    width: 2,
    hedges: [1, 1, 2, 2, 0, 0],
    mayStart: () => true,
    onStart: (why) => starts.push(why),
    onSpare: (s) => spares.push(s),
    isStall: (e) => (e as { code?: string }).code === 'HEDGE',
    ...over,
  });
  return { setups, spares, starts, race };
}

const until = async (cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('one set-up ready at once: nothing else starts', async () => {
  const h = harness();
  h.setups[0]!.resolve('a');
  assert.is(await h.race, 'a');
  await new Promise((r) => setTimeout(r, 250)); // past two staggers: a negative check
  assert.is(h.setups.length, 1);
});

test('a slow first set-up gets a second after the stagger; the first ready wins, the other is a spare', async () => {
  const h = harness();
  await until(() => h.setups.length === 2);
  assert.ok(h.setups[1]!.at >= 90, `second started after ${h.setups[1]!.at} ms`);
  assert.equal(h.starts, ['stagger']);
  h.setups[1]!.resolve('b');
  assert.is(await h.race, 'b');
  h.setups[0]!.resolve('a');
  await until(() => h.spares.length === 1);
  assert.equal(h.spares, ['a']);
  assert.is(h.setups.length, 2, 'width 2: no third while one was under way');
});

test('a stalled set-up is replaced at once, with the next stall limit; six at most, the last two unhedged', async () => {
  const h = harness({ staggerMs: 10_000 });
  for (let i = 0; i < 5; i++) {
    const n = h.setups.length;
    h.setups[n - 1]!.reject(stall);
    await until(() => h.setups.length === n + 1, 1000);
  }
  assert.equal(h.setups.map((s) => s.hedge), [1, 1, 2, 2, 0, 0]);
  assert.equal(h.starts, ['stalled', 'stalled', 'stalled', 'stalled', 'stalled']);
  h.setups[5]!.reject(stall);
  assert.is(await h.race.catch((e: unknown) => e), stall);
});

test('a set-up that fails outright is the answer when nothing else is under way, and the better failure is reported', async () => {
  const refused = new Error('refused');
  const h = harness();
  h.setups[0]!.reject(refused);
  assert.is(await h.race.catch((e: unknown) => e), refused);
  await new Promise((r) => setTimeout(r, 250));
  assert.is(h.setups.length, 1, 'started again after a refusal');

  const k = harness();
  await until(() => k.setups.length === 2);
  k.setups[0]!.reject(refused);
  k.setups[1]!.reject(stall);
  // The stall was replaced; the replacement fails too, and then the last ones.
  await until(() => k.setups.length === 3);
  for (let i = 2; i < 6; i++) {
    await until(() => k.setups.length > i);
    k.setups[i]!.reject(stall);
  }
  assert.is(await k.race.catch((e: unknown) => e), refused);
});

test('no further start once mayStart says no (link down, deadline)', async () => {
  let may = true;
  const h = harness({ mayStart: () => may });
  may = false;
  h.setups[0]!.reject(stall);
  assert.is(await h.race.catch((e: unknown) => e), stall);
  assert.is(h.setups.length, 1);
});

test.run();
