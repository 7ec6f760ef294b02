// raceSetups (src/deliver/setup-race.ts) with set-ups that are plain promises settled by the
// test, on a clock the test steps: who starts when, who wins, what becomes a spare, and which
// failure is reported.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { raceSetups, type RaceOptions } from '../../src/deliver/setup-race.js';
import { manualTimers, settle } from '../helpers/manual-timers.js';

interface Setup {
  hedge: number;
  at: number;
  resolve(v: string): void;
  reject(e: unknown): void;
}

const stall = Object.assign(new Error('stalled'), { code: 'HEDGE' });

function harness(over: Partial<RaceOptions<string>> = {}) {
  const clock = manualTimers();
  const setups: Setup[] = [];
  const spares: string[] = [];
  const starts: string[] = [];
  const start = (hedge: number) =>
    new Promise<string>((resolve, reject) => setups.push({ hedge, at: clock.now(), resolve, reject }));
  const race = raceSetups(start, {
    staggerMs: 100,
    width: 2,
    hedges: [1, 1, 2, 2, 0, 0],
    mayStart: () => true,
    onStart: (why) => starts.push(why),
    onSpare: (s) => spares.push(s),
    isStall: (e) => (e as { code?: string }).code === 'HEDGE',
    clock,
    ...over,
  });
  return { clock, setups, spares, starts, race };
}

test('one set-up ready at once: nothing else starts', async () => {
  const h = harness();
  h.setups[0]!.resolve('a');
  assert.is(await h.race, 'a');
  assert.is(h.clock.pending, 0, 'the stagger timer outlived the race');
  await h.clock.advance(250); // two staggers
  assert.is(h.setups.length, 1);
});

test('a slow first set-up gets a second after the stagger; the first ready wins, the other is a spare', async () => {
  const h = harness();
  await h.clock.advance(99);
  assert.is(h.setups.length, 1, 'second started before the stagger');
  await h.clock.advance(1);
  assert.is(h.setups.length, 2);
  assert.is(h.setups[1]!.at, 100);
  assert.equal(h.starts, ['stagger']);
  h.setups[1]!.resolve('b');
  assert.is(await h.race, 'b');
  h.setups[0]!.resolve('a');
  await settle();
  assert.equal(h.spares, ['a']);
  await h.clock.advance(250);
  assert.is(h.setups.length, 2, 'width 2: no third while one was under way');
});

test('a stalled set-up is replaced at once, with the next stall limit; six at most, the last two unhedged', async () => {
  const h = harness({ staggerMs: 10_000 });
  for (let i = 0; i < 5; i++) {
    h.setups[i]!.reject(stall);
    await settle();
    assert.is(h.setups.length, i + 2);
  }
  assert.equal(h.setups.map((s) => s.hedge), [1, 1, 2, 2, 0, 0]);
  assert.equal(h.setups.map((s) => s.at), [0, 0, 0, 0, 0, 0], 'a replacement waited');
  assert.equal(h.starts, ['stalled', 'stalled', 'stalled', 'stalled', 'stalled']);
  h.setups[5]!.reject(stall);
  assert.is(await h.race.catch((e: unknown) => e), stall);
});

test('a set-up that fails outright is the answer when nothing else is under way, and the better failure is reported', async () => {
  const refused = new Error('refused');
  const h = harness();
  h.setups[0]!.reject(refused);
  assert.is(await h.race.catch((e: unknown) => e), refused);
  await h.clock.advance(250);
  assert.is(h.setups.length, 1, 'started again after a refusal');

  const k = harness();
  const failed = k.race.catch((e: unknown) => e); // it fails within the loop below
  await k.clock.advance(100);
  assert.is(k.setups.length, 2);
  k.setups[0]!.reject(refused);
  k.setups[1]!.reject(stall);
  await settle();
  // The stall was replaced; the replacement fails too, and then the last ones.
  for (let i = 2; i < 6; i++) {
    assert.is(k.setups.length, i + 1);
    k.setups[i]!.reject(stall);
    await settle();
  }
  assert.is(await failed, refused);
});

test('no further start once mayStart says no (link down, deadline)', async () => {
  let may = true;
  const h = harness({ mayStart: () => may });
  may = false;
  h.setups[0]!.reject(stall);
  assert.is(await h.race.catch((e: unknown) => e), stall);
  await h.clock.advance(250);
  assert.is(h.setups.length, 1);
});

test.run();
