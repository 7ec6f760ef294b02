// Envelope address rules (src/message/address.ts): what is a mailbox, and what only looks like
// one of the aliases file's file/pipe targets.

import { Worker } from 'node:worker_threads';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { invisibleReason, isValidEnvelopeAddress, nonMailboxReason } from '../../src/message/address.js';

test('file, pipe, \\user and :include: forms are not mailboxes, quoted or not', () => {
  for (const a of ['/tmp/x@evil.example', '/tmp/x', '|cmd@host.example', '"/tmp/x"@host.example', '"\\/tmp/x"@host.example', '"\\\\root"@host.example', ':include:/etc/x@host.example', '"|cmd"@host.example']) {
    assert.ok(nonMailboxReason(a), a);
    assert.not.ok(isValidEnvelopeAddress(a), a);
  }
});

test('ordinary addresses still are', () => {
  for (const a of ['alice@example.org', 'a/b@example.org', 'a|b@example.org', '"john doe"@example.org', 'x+tag@[192.0.2.1]']) {
    assert.is(nonMailboxReason(a), null, a);
  }
  assert.ok(isValidEnvelopeAddress('a/b@example.org'));
});

test('invisible characters (SMTP MAIL/RCPT rule) are refused and named; a joiner after a non-ASCII letter is not', () => {
  const cases: [string, string][] = [['a\u202eb@example.org', '202E'], ['pay\u200dpal@example.org', '200D'], ['x@exa\u00admple.org', '00AD'], ['tag\u{e0041}@example.org', 'E0041'], ['\ufeffa@example.org', 'FEFF']];
  for (const [a, cp] of cases) {
    assert.not.ok(isValidEnvelopeAddress(a), a);
    assert.is(invisibleReason(a), `it contains an invisible or control character (U+${cp})`, a);
  }
  assert.is(invisibleReason('نامه\u200cها@example.org'), null);
  assert.ok(isValidEnvelopeAddress('نامه\u200cها@example.org'));
  assert.is(invisibleReason('نامه\u200cها\u202e@example.org'), 'it contains an invisible or control character (U+202E)');
});

/**
 * invisibleReason(text) in a worker, which is ended after `limitMs`: a slow answer fails at the
 * bound instead of running on (the prefix search took about 80 minutes for 1 MB).
 * @returns the reason and the milliseconds it took, or null when it did not answer in time
 */
function timedReason(text: string, limitMs: number): Promise<{ reason: string | null; ms: number } | null> {
  const module = new URL('../../src/message/address.js', import.meta.url).href;
  const worker = new Worker(
    `const { parentPort, workerData } = require('node:worker_threads');
     import(workerData.module).then(({ invisibleReason }) => {
       parentPort.postMessage('loaded');
       const t = performance.now();
       const reason = invisibleReason(workerData.text);
       parentPort.postMessage({ reason, ms: performance.now() - t });
     });`,
    { eval: true, workerData: { module, text } },
  );
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    worker.on('error', reject);
    worker.on('message', (m: 'loaded' | { reason: string | null; ms: number }) => {
      if (m === 'loaded') {
        timer = setTimeout(() => void worker.terminate().then(() => resolve(null)), limitMs);
        return;
      }
      clearTimeout(timer);
      void worker.terminate().then(() => resolve(m));
    });
  });
}

test('a 1 MB refused name or address is answered at once, with the same words', async () => {
  const MB = 1 << 20;
  const cases: [string, string][] = [
    ['a'.repeat(MB) + '\u202e@example.org', '202E'],
    ['a'.repeat(MB) + '\u200d', '200D'], // a joiner is judged by the character before it
    ['\u0646\u0627\u200c'.repeat(MB / 3) + '\u{e0041}@example.org', 'E0041'], // a million allowed joiners, then a tag
  ];
  for (const [text, cp] of cases) {
    // Generous for a loaded machine: the one scan takes 15-45 ms here, the prefix search minutes.
    const r = await timedReason(text, 2000);
    assert.ok(r, `U+${cp} at the end of ${text.length} characters: no answer within 2 s`);
    assert.is(r.reason, `it contains an invisible or control character (U+${cp})`);
  }
});

test.run();
