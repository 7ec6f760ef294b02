// rmail: mail arriving over UUCP. The message starts with one or more "From user date
// [remote from host]" lines, which give the envelope sender as a bang path (host!user);
// recipients are the arguments. Everything after the From lines is the message; no dot
// handling (as with -i).

import { Readable } from 'node:stream';
import { UsageError } from '../errors.js';
import { cliContext, takeConfigOption } from './context.js';
import { submit } from './sendmail.js';
import { usageLine } from './usage.js';

const FROM_LINE = /^>?From\s+(\S+)\s+.*?(?:\s+remote\s+from\s+(\S+))?\s*$/;

/** Parses the leading UUCP From lines; returns the bang-path sender and the bytes after them. */
export function parseUucpHeader(head: Buffer): { sender: string | null; rest: Buffer } {
  let pos = 0;
  const hops: string[] = [];
  let user: string | null = null;
  while (pos < head.length) {
    const nl = head.indexOf(10, pos);
    if (nl < 0) break;
    const line = head.subarray(pos, nl).toString('latin1').replace(/\r$/, '');
    const m = FROM_LINE.exec(line);
    if (!m) break;
    user = m[1]!;
    if (m[2]) hops.push(m[2]);
    pos = nl + 1;
  }
  if (user === null) return { sender: null, rest: head };
  // "From user … remote from hostA" then ">From user … remote from hostB": sender is hostA!hostB!user.
  const sender = [...hops, user].join('!');
  return { sender, rest: head.subarray(pos) };
}

export async function runRmail(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const recipients = args.filter((a) => !a.startsWith('-'));
  if (!recipients.length) throw new UsageError(usageLine('rmail', 'rmail'));
  // Read enough to see the From lines (they are short), then stream the rest.
  const it = (process.stdin as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  let head = Buffer.alloc(0);
  while (head.length < 8192) {
    const n = await it.next();
    if (n.done) break;
    head = Buffer.concat([head, n.value]);
    if (!/^>?From /.test(head.toString('latin1', 0, 6)) || head.indexOf('\n\n') >= 0) break;
  }
  const { sender, rest } = parseUucpHeader(head);
  async function* body() {
    yield rest;
    for (let n = await it.next(); !n.done; n = await it.next()) yield n.value as Buffer;
  }
  const from = sender ? (sender.includes('@') ? sender : `${sender}@${ctx.config.hostname}`) : undefined;
  return submit(
    ctx,
    { mode: 'deliver', extractRecipients: false, ignoreDots: true, verbose: false, recipients, ignored: [], sender: from },
    Readable.from(body()),
    'rmail',
    'via rmail (UUCP)',
  );
}
