// One message from the POP3 server into submit, for the fetch job (pop3.ts): RETR streamed
// through a bounded queue of chunks (reading from the server pauses while submit is behind),
// and, for oversize = "headers", the header section from TOP n 0 delivered with a note in
// place of the message. A submit that rejects becomes a SubmitError: the session itself is
// still in step, so the job can QUIT and keep the deletions made so far.

import type { Pop3Client } from './pop3-client.js';
import type { FetchAccount } from './account.js';
import type { FetchDeps } from './pop3.js';
import { envelopeFor, HEADER_SCAN_LIMIT } from './recipients.js';
import { TidemailError } from '../errors.js';

/** A header section (TOP n 0) larger than this is not one. */
export const TOP_CAP = 1024 * 1024;

/** Bytes per chunk handed to submit, and chunks waiting before RETR stops reading. */
const CHUNK = 64 * 1024;
const MAX_QUEUED = 4;

/** submit rejected the message (the POP3 session itself is fine). */
export class SubmitError extends TidemailError {
  override name = 'SubmitError';
}

/**
 * RETR n, its lines (dot-unstuffed, CRLF-terminated) streamed into `submit` through a bounded
 * queue of chunks: reading from the server pauses while submit is behind. With `wantHeaders`,
 * submit is called once the header section is in (up to HEADER_SCAN_LIMIT) and gets its lines.
 * @returns the message's size in bytes.
 * @throws SubmitError when submit rejects or stops reading early; Pop3Error from RETR.
 */
export async function retrieve(
  client: Pop3Client,
  n: number,
  maxBytes: number,
  wantHeaders: boolean,
  submit: (body: AsyncIterable<Buffer>, headerLines: Buffer[]) => Promise<void>,
  onBytes: (bytes: number) => void,
): Promise<number> {
  // Below the queue's bound (MAX_QUEUED × CHUNK), so RETR never waits for a submit not yet called.
  let headerLines: Buffer[] | null = wantHeaders ? [] : null;
  let headerBytes = 0;
  let headersDone!: () => void;
  const headersIn = new Promise<void>((r) => (headersDone = r));
  const headerLine = (line: Buffer) => {
    if (!headerLines) return;
    if (line.length === 0 || headerBytes > HEADER_SCAN_LIMIT) {
      headerLines = null;
      headersDone();
      return;
    }
    headerLines.push(line);
    headerBytes += line.length;
  };
  const collected = headerLines;
  if (!wantHeaders) headersDone();
  const chunks: Buffer[] = [];
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let ended = false;
  let failure: Error | null = null;
  let consumerGone = false;
  let consumedToEnd = false;
  let wakeConsumer: (() => void) | null = null;
  let wakeProducer: (() => void) | null = null;
  let total = 0;
  const poke = () => {
    wakeConsumer?.();
    wakeConsumer = null;
  };
  const flush = () => {
    if (!pendingBytes) return;
    chunks.push(pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes));
    pending = [];
    pendingBytes = 0;
    poke();
  };

  const body: AsyncIterable<Buffer> = {
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          const c = chunks.shift();
          if (c) {
            wakeProducer?.();
            wakeProducer = null;
            yield c;
            continue;
          }
          if (failure) throw failure;
          if (ended) {
            consumedToEnd = true;
            return;
          }
          await new Promise<void>((r) => (wakeConsumer = r));
        }
      } finally {
        if (!consumedToEnd) stopConsuming();
      }
    },
  };
  const stopConsuming = () => {
    consumerGone = true;
    chunks.length = 0;
    wakeProducer?.();
    wakeProducer = null;
  };

  const onLine = async (line: Buffer) => {
    total += line.length + 2;
    headerLine(line);
    if (consumerGone) return; // keep reading to stay in step with the server
    pending.push(line, CRLF);
    pendingBytes += line.length + 2;
    if (pendingBytes < CHUNK) return;
    flush();
    onBytes(total);
    while (chunks.length >= MAX_QUEUED && !consumerGone) await new Promise<void>((r) => (wakeProducer = r));
  };

  const retr = client.retr(n, onLine, maxBytes).then(
    () => {
      flush();
      ended = true;
      headersDone();
      poke();
    },
    (err: unknown) => {
      failure = err instanceof Error ? err : new Error(String(err));
      headersDone();
      poke();
      throw err;
    },
  );
  await headersIn;
  const submitted = (async () => submit(body, collected ?? []))().finally(stopConsuming);
  const [r, s] = await Promise.allSettled([retr, submitted]);
  if (r.status === 'rejected') throw r.reason;
  if (s.status === 'rejected') throw new SubmitError(`message ${n} was not queued: ${s.reason instanceof Error ? s.reason.message : String(s.reason)}`, { cause: s.reason });
  if (!consumedToEnd) throw new SubmitError(`message ${n} was not queued: submit returned before reading the whole message`);
  return total;
}

const CRLF = Buffer.from('\r\n');

/** MIME fields that describe the body left behind; renamed so the note body reads as plain text. */
const BODY_FIELDS = /^(content-type|content-transfer-encoding|content-disposition):/i;

/**
 * oversize = "headers": TOP n 0, and the header section delivered with a note field and a
 * short plain-text body saying the message is still on the server.
 * @returns bytes delivered.
 */
export async function deliverHeaders(client: Pop3Client, acct: FetchAccount, m: { n: number; size: number }, maxSize: number, maxName: string, deps: FetchDeps): Promise<number> {
  const { lines } = await client.multiline(`TOP ${m.n} 0`, undefined, { maxBytes: TOP_CAP });
  const end = lines.findIndex((l) => l.length === 0);
  const headerLines = end >= 0 ? lines.slice(0, end) : lines;
  const where = `${acct.host} (account ${acct.name})`;
  const out: string[] = [
    `X-Tidemail-Oversize: ${m.size} bytes, over ${maxName} ${maxSize}; only the header section was fetched, the message is left on ${where}`,
  ];
  let renamed = false;
  for (const l of headerLines) {
    const s = l.toString('latin1');
    if (BODY_FIELDS.test(s)) {
      out.push('X-Original-' + s);
      renamed = true;
    } else if (/^[ \t]/.test(s) && renamed) out.push(s);
    else {
      renamed = false;
      out.push(s);
    }
  }
  out.push('Content-Type: text/plain; charset=us-ascii', '', `This message is ${m.size} bytes, more than the ${maxSize} bytes allowed for`, `fetching by account ${acct.name}. Only its header section was fetched; the`, `whole message is still on ${acct.host}: read it there, or raise ${maxName}.`, '');
  const text = Buffer.from(out.join('\r\n'), 'latin1');
  try {
    await deps.submit(acct, (async function* () {
      yield text;
    })(), envelopeFor(acct, headerLines));
  } catch (err) {
    throw new SubmitError(`the header section of message ${m.n} was not queued: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return text.length;
}
