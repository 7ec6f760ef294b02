// DataChecker: the bare CR / bare LF / NUL / size scan over DATA as it arrives in chunks.
// smtp-server hands DATA over in arbitrary pieces, so every verdict must be the same however
// the message is split.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DataChecker, type DataProblem } from '../../src/smtp/data-check.js';

/** Scans `parts` in order and returns the verdict at end of data. */
function verdict(parts: (string | Buffer)[], max = 1 << 30): DataProblem | null {
  const c = new DataChecker(max);
  for (const p of parts) c.scan(typeof p === 'string' ? Buffer.from(p, 'binary') : p);
  return c.finish();
}

/** Every way to cut `text` into two pieces, plus one byte at a time. */
function splits(text: string): string[][] {
  const out: string[][] = [[text], text.split('')];
  for (let i = 0; i <= text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

function assertEverySplit(text: string, expected: DataProblem | null): void {
  for (const parts of splits(text)) {
    assert.is(verdict(parts), expected, `${JSON.stringify(parts)} → expected ${expected}`);
  }
}

test('CRLF-only data passes however it is split, including CR and LF in different chunks', () => {
  assertEverySplit('Subject: x\r\n\r\nline\r\n.leading dot\r\n\r\n', null);
  assert.is(verdict(['a\r', '', '\nb\r\n']), null, 'an empty chunk between CR and LF');
  assert.is(verdict(['a\r', '\n', '\r', '\n']), null);
  assert.is(verdict([]), null, 'empty message');
});

test('a bare LF is found wherever it falls, also right after a chunk that ends without CR', () => {
  assertEverySplit('Subject: x\r\n\r\nline\nmore\r\n', 'bare-lf');
  assertEverySplit('\nfirst\r\n', 'bare-lf');
  assertEverySplit('ok\r\n\n', 'bare-lf');
  assert.is(verdict(['abc', '\ndef\r\n']), 'bare-lf');
});

test('a bare CR is found mid-chunk, at a chunk end followed by anything but LF, and at end of data', () => {
  assertEverySplit('Subject: x\r\n\r\nline\rmore\r\n', 'bare-cr');
  assertEverySplit('line\r\r\n', 'bare-cr');
  assertEverySplit('text\r\n.\r', 'bare-cr');
  assert.is(verdict(['abc\r', 'd\r\n']), 'bare-cr');
  assert.is(verdict(['abc\r', '\r\n']), 'bare-cr');
  assert.is(verdict(['abc\r']), 'bare-cr', 'CR as the very last byte');
  assert.is(verdict(['abc\r', '']), 'bare-cr', 'CR before an empty last chunk');
});

test('smuggling-style fake terminators are refused in every split', () => {
  const smuggled = 'MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n';
  const cases: [string, DataProblem][] = [
    ['\n.\n', 'bare-lf'],
    ['\n.\r\n', 'bare-lf'],
    ['\r\n.\n', 'bare-lf'],
    ['\r.\r', 'bare-cr'],
    ['\r.\r\n', 'bare-cr'],
    ['\r\n.\r', 'bare-cr'],
  ];
  for (const [end, problem] of cases) assertEverySplit(`Subject: s\r\n\r\nhello${end}${smuggled}`, problem);
});

test('a NUL byte is refused in any chunk', () => {
  assertEverySplit('Subject: x\r\n\r\nli\0ne\r\n', 'nul');
  assert.is(verdict(['\0']), 'nul');
  assert.is(verdict(['ok\r\n', 'ok\r\n', 'x\0\r\n']), 'nul');
});

test('size: exactly the limit passes, one byte more is too big, counted across chunks', () => {
  const body = 'x'.repeat(98) + '\r\n'; // 100 bytes
  assert.is(verdict([body], 100), null);
  assert.is(verdict([body.slice(0, 37), body.slice(37)], 100), null);
  assert.is(verdict([body, 'y'], 100), 'too-big');
  assert.is(verdict([body.slice(0, 50), body.slice(50), '\r\n'], 101), 'too-big');
  const c = new DataChecker(100);
  c.scan(Buffer.from(body));
  assert.is(c.size, 100);
  assert.is(c.scan(Buffer.from('\r\n')), false);
  assert.is(c.size, 102, 'size keeps counting what the client sent');
});

test('the first problem sticks: scan returns false from then on and later data changes nothing', () => {
  const c = new DataChecker(1000);
  assert.is(c.scan(Buffer.from('fine\r\n')), true);
  assert.is(c.scan(Buffer.from('bad\nline\r\n')), false);
  assert.is(c.problem, 'bare-lf');
  assert.is(c.scan(Buffer.from('\0\0\0')), false);
  assert.is(c.scan(Buffer.from('x'.repeat(2000))), false);
  assert.is(c.finish(), 'bare-lf');
});

test('random messages and random chunkings agree with a whole-buffer reference check', () => {
  // A small deterministic PRNG so a failure can be reproduced.
  let seed = 0x2f6b1d;
  const rand = (n: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  // 'mixed': more than one kind of fault, where which is reported first may vary; skipped.
  const reference = (b: Buffer): DataProblem | null | 'mixed' => {
    const s = b.toString('binary');
    const kinds = new Set<DataProblem>();
    if (s.includes('\0')) kinds.add('nul');
    if (/(^|[^\r])\n/.test(s)) kinds.add('bare-lf');
    if (/\r(?!\n)/.test(s)) kinds.add('bare-cr');
    if (kinds.size > 1) return 'mixed';
    return [...kinds][0] ?? null;
  };
  const clean = ['a', 'b', ' ', '.', '\r\n', '\r\n', '\r\n', '\xe9'];
  const faults = ['\r', '\n', '\0'];
  let checked = 0;
  let faulty = 0;
  for (let round = 0; round < 3000; round++) {
    const pieces: string[] = [];
    const len = 1 + rand(40);
    for (let i = 0; i < len; i++) pieces.push(clean[rand(clean.length)]!);
    // Half the messages get one or two faults of one kind, anywhere.
    if (rand(2) === 0) {
      const f = faults[rand(faults.length)]!;
      for (let k = 1 + rand(2); k > 0; k--) pieces.splice(rand(pieces.length + 1), 0, f);
    }
    const msg = Buffer.from(pieces.join(''), 'binary');
    const expected = reference(msg);
    if (expected === 'mixed') continue;
    const parts: Buffer[] = [];
    for (let at = 0; at < msg.length; ) {
      const n = rand(6); // includes empty chunks
      parts.push(msg.subarray(at, at + n));
      at += n;
    }
    assert.is(verdict(parts), expected, `${JSON.stringify(msg.toString('binary'))} in ${JSON.stringify(parts.map((p) => p.toString('binary')))}`);
    checked++;
    if (expected) faulty++;
  }
  assert.ok(checked > 2000 && faulty > 1000, `only ${checked} cases checked, ${faulty} with a fault`);
});

test.run();
