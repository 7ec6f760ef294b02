// Queue ids (queue/ids.ts): unique and in arrival order, within one millisecond and across many
// (the random part comes from a pool of random bytes now, refilled as it runs out).

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isMessageId, newMessageId } from '../../src/queue/ids.js';

test('ids are unique and sort by arrival over 5000 messages, many in the same millisecond', () => {
  const t0 = Date.UTC(2026, 0, 1);
  const ids: string[] = [];
  for (let i = 0; i < 5000; i++) ids.push(newMessageId(t0 + Math.floor(i / 7)));
  assert.is(new Set(ids).size, ids.length);
  assert.equal([...ids].sort(), ids);
  assert.ok(ids.every(isMessageId));
});

test('the random part differs between milliseconds (not a counter from zero)', () => {
  const t0 = Date.UTC(2026, 1, 1);
  const tails = new Set<string>();
  for (let i = 0; i < 300; i++) tails.add(newMessageId(t0 + i * 1000).slice(12));
  assert.ok(tails.size > 250, `${tails.size} distinct of 300`);
});

test.run();
