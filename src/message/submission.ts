// Turns what a local program pipes into `sendmail` into a proper message in a spool:
// LF → CRLF, the optional single-dot terminator, header fixes (Bcc removed, Date, Message-ID
// and From added when missing), and recipients taken from the header with -t. Streams: only
// the header section is held in memory (bounded), never the body.

import type { Readable } from 'node:stream';
import type { Spool } from '../queue/store.js';
import { rfc5322Date } from './date.js';
import { addressesIn, hasField, isContinuation, isFieldStart, serializeFields, type HeaderField } from './headers.js';

export interface SubmissionOptions {
  extractRecipients: boolean;
  /** Without -i, a line holding only "." ends the message. */
  dotTerminates: boolean;
  sender: string;
  fullName?: string;
  hostname: string;
  uid: number;
  /** A Received line's comment describing the submission ("via rmail (UUCP)"); none when unset. */
  traceWith?: string;
  /** For rmail: the first lines are UUCP "From " lines, already consumed by the caller. */
  skipFromLine?: boolean;
}

export interface SubmissionResult {
  /** Recipients found in To/Cc/Bcc (only with extractRecipients). */
  headerRecipients: string[];
  size: number;
}

const MAX_HEADER_BYTES = 1024 * 1024;

/** Splits a byte stream into lines (without LF and trailing CR); handles any chunking. */
export async function* lines(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  let carry: Buffer | null = null;
  for await (const chunk of input) {
    let start = 0;
    let data = chunk;
    if (carry) {
      data = Buffer.concat([carry, chunk]);
      carry = null;
    }
    for (let nl = data.indexOf(10); nl !== -1; nl = data.indexOf(10, start)) {
      const end = nl > start && data[nl - 1] === 13 ? nl - 1 : nl;
      yield data.subarray(start, end);
      start = nl + 1;
    }
    if (start < data.length) carry = Buffer.from(data.subarray(start));
  }
  if (carry && carry.length) yield carry[carry.length - 1] === 13 ? carry.subarray(0, -1) : carry;
}

const CRLF = Buffer.from('\r\n');
const WRITE_BATCH = 64 * 1024;

export async function writeSubmission(input: Readable | AsyncIterable<Buffer>, spool: Spool, o: SubmissionOptions): Promise<SubmissionResult> {
  const fields: HeaderField[] = [];
  let headerBytes = 0;
  let inHeader = true;
  let firstLine = true;
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let ended = false;
  let bodyStartLine: Buffer | null = null;

  const it = lines(input as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  // Header section.
  while (inHeader) {
    const next = await it.next();
    if (next.done) {
      ended = true;
      break;
    }
    const line = next.value.toString('utf8');
    if (firstLine && line.startsWith('From ') && !isFieldStart(line)) {
      firstLine = false; // mbox "From " envelope line: not part of the message
      continue;
    }
    firstLine = false;
    if (o.dotTerminates && line === '.') {
      ended = true;
      break;
    }
    if (line === '') {
      inHeader = false;
      break;
    }
    if (isContinuation(line) && fields.length) {
      fields[fields.length - 1]!.lines.push(line);
    } else if (isFieldStart(line) && headerBytes < MAX_HEADER_BYTES) {
      fields.push({ name: line.slice(0, line.indexOf(':')).trim().toLowerCase(), lines: [line] });
    } else {
      // Not a header line: the header section ended without a blank line (sendmail-style).
      bodyStartLine = next.value;
      inHeader = false;
      break;
    }
    headerBytes += line.length + 2;
  }

  const resent = fields.some((f) => f.name.startsWith('resent-'));
  const rcptFields = resent ? ['resent-to', 'resent-cc', 'resent-bcc'] : ['to', 'cc', 'bcc'];
  const headerRecipients = o.extractRecipients ? addressesIn(fields, rcptFields) : [];
  const kept = fields.filter((f) => f.name !== 'bcc' && f.name !== 'resent-bcc');

  const out = [o.traceWith ? `Received: by ${o.hostname} (tidemail sendmail, ${o.traceWith});\r\n\t${rfc5322Date()}\r\n` : '', serializeFields(kept)];
  if (!hasField(fields, 'from')) out.push(`From: ${o.fullName ? `${quotePhrase(o.fullName)} ` : ''}<${o.sender || `MAILER-DAEMON@${o.hostname}`}>\r\n`);
  if (!hasField(fields, 'date')) out.push(`Date: ${rfc5322Date()}\r\n`);
  if (!hasField(fields, 'message-id')) out.push(`Message-ID: <${spool.msgid}.${Date.now().toString(36)}@${o.hostname}>\r\n`);
  out.push('\r\n');
  await spool.write(Buffer.from(out.join(''), 'utf8'));

  const flush = async () => {
    if (!pendingBytes) return;
    await spool.write(Buffer.concat(pending, pendingBytes));
    pending = [];
    pendingBytes = 0;
  };
  const push = async (line: Buffer) => {
    pending.push(line, CRLF);
    pendingBytes += line.length + 2;
    if (pendingBytes >= WRITE_BATCH) await flush();
  };
  if (bodyStartLine) await push(bodyStartLine);
  while (!ended) {
    const next = await it.next();
    if (next.done) break;
    if (o.dotTerminates && next.value.length === 1 && next.value[0] === 0x2e) break;
    await push(next.value);
  }
  await flush();
  return { headerRecipients, size: spool.size };
}

/** A display name as an RFC 5322 phrase: atoms as they are, anything else quoted. */
export function quotePhrase(name: string): string {
  return /^[\w !#$%&'*+\-/=?^`{|}~]*$/.test(name) ? name : JSON.stringify(name);
}
