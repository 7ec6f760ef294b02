// The end of message data and dot-unstuffing (src/smtp/wire/data-reader.ts) under every split
// of the bytes into chunks: a client (or the network) may cut anywhere, including inside
// "\r\n.\r\n" and between the two dots of a stuffed line. Also the line reader's limits.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DataReader } from '../../../src/smtp/wire/data-reader.js';
import { LineReader, TOO_LONG } from '../../../src/smtp/wire/line-reader.js';

/** Feeds `wire` in the given pieces; returns the message and what followed the terminator. */
function read(pieces: Buffer[]): { message: string; rest: string; ended: boolean } {
  const r = new DataReader();
  const out: Buffer[] = [];
  for (let i = 0; i < pieces.length; i++) {
    const end = r.feed(pieces[i]!, (b) => out.push(Buffer.from(b)));
    if (end !== -1) return { message: Buffer.concat(out).toString('latin1'), rest: Buffer.concat([pieces[i]!.subarray(end), ...pieces.slice(i + 1)]).toString('latin1'), ended: true };
  }
  return { message: Buffer.concat(out).toString('latin1'), rest: '', ended: false };
}

/** Every way to cut `wire` in two, three and one byte at a time. */
function splits(wire: string): Buffer[][] {
  const b = Buffer.from(wire, 'latin1');
  const all: Buffer[][] = [[b], [...b].map((x) => Buffer.from([x]))];
  for (let i = 0; i <= b.length; i++) {
    all.push([b.subarray(0, i), b.subarray(i)]);
    for (let j = i; j <= b.length; j += 3) all.push([b.subarray(0, i), b.subarray(i, j), b.subarray(j)]);
  }
  return all;
}

const cases: [string, string, string, string][] = [
  // name, bytes after 354, message, rest
  ['plain', 'Subject: x\r\n\r\nhello\r\n.\r\nNOOP\r\n', 'Subject: x\r\n\r\nhello\r\n', 'NOOP\r\n'],
  ['stuffed dot lines', 'a\r\n..\r\n...b\r\n.c\r\n.\r\n', 'a\r\n.\r\n..b\r\n.c\r\n', ''],
  ['empty message', '.\r\nQUIT\r\n', '', 'QUIT\r\n'],
  ['first line a stuffed dot', '..\r\nx\r\n.\r\n', '.\r\nx\r\n', ''],
  ['first line a stuffed terminator-lookalike', '...\r\n.\r\n', '..\r\n', ''],
  ['empty first line', '\r\n.\r\n', '\r\n', ''],
  ['fake end with bare LF stays content', 'hi\n.\nMAIL FROM:<e@x>\r\n.\r\n', 'hi\n.\nMAIL FROM:<e@x>\r\n', ''],
  ['fake end with bare CR stays content', 'hi\r.\rX\r\n.\r\n', 'hi\r.\rX\r\n', ''],
  ['dot CR X is not an end', 'hi\r\n.\rX\r\n.\r\n', 'hi\r\n.\rX\r\n', ''],
  ['dot after bare LF then CRLF', 'hi\n.\r\nRSET\r\n.\r\n', 'hi\n.\r\nRSET\r\n', ''],
  ['NUL next to the dot', 'hi\r\n\0.\r\n.\0\r\n.\r\n', 'hi\r\n\0.\r\n.\0\r\n', ''],
  ['8-bit bytes', 'gr\xfc\xdfe\r\n\xff.\r\n.\r\n', 'gr\xfc\xdfe\r\n\xff.\r\n', ''],
];

for (const [name, wire, message, rest] of cases) {
  test(`data end and unstuffing, every split: ${name}`, () => {
    for (const pieces of splits(wire)) {
      const got = read(pieces);
      const where = pieces.map((p) => JSON.stringify(p.toString('latin1'))).join(' | ');
      assert.ok(got.ended, `no end found in ${where}`);
      assert.is(got.message, message, where);
      assert.is(got.rest, rest, where);
    }
  });
}

test('data that has not ended yet hands on what it can and holds at most the dot', () => {
  const r = new DataReader();
  const out: string[] = [];
  assert.is(r.feed(Buffer.from('line\r\n.'), (b) => out.push(b.toString())), -1);
  assert.equal(out, ['line\r\n']);
  assert.is(r.feed(Buffer.from('.more\r\n'), (b) => out.push(b.toString())), -1);
  assert.is(out.join(''), 'line\r\n.more\r\n');
});

test('command lines: CRLF or bare LF ends them, across chunks; over the limit is TOO_LONG', () => {
  const r = new LineReader(10);
  r.push(Buffer.from('NOOP\r'));
  assert.is(r.nextLine(), null);
  r.push(Buffer.from('\nRSET\nQU'));
  assert.is(r.nextLine(), 'NOOP');
  assert.is(r.nextLine(), 'RSET');
  assert.is(r.nextLine(), null);
  r.push(Buffer.from('IT\r\n'));
  assert.is(r.nextLine(), 'QUIT');
  r.push(Buffer.from('x'.repeat(10) + '\r\n'));
  assert.is(r.nextLine(), 'x'.repeat(10));
  r.push(Buffer.from('y'.repeat(11) + '\r\n'));
  assert.is(r.nextLine(), TOO_LONG);
  // An endless line is refused as soon as it is over the limit, not when it ends.
  const endless = new LineReader(10);
  endless.push(Buffer.from('z'.repeat(12)));
  assert.is(endless.nextLine(), TOO_LONG);
  assert.is(endless.pending, 0);
});

test.run();
