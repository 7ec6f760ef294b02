// Shared by the local delivery targets (Maildir, mbox, MDA): the trace headers a final
// delivery prepends, the message as Unix programs store it (LF line ends), and the file
// handling Maildir and mbox have in common (owner, full writes, errors as results).

import type { FileHandle } from 'node:fs/promises';
import { pipeline, Readable } from 'node:stream';
import { CrlfToLf } from './pipe.js';
import type { DeliveryResult } from './transport.js';

/** Who a local delivery is for. */
export interface LocalDeliveryInfo {
  /** The envelope sender; '' for the null sender. */
  sender: string;
  /** The original recipient, written into Delivered-To. */
  recipient: string;
  /** The local account; files are handed to it (and an MDA runs as it) when we run as root. */
  user?: { name: string; uid: number; gid: number; home: string };
}

/**
 * "Return-Path: <sender>\nDelivered-To: recipient\n". RFC 5321 4.4: the final delivery
 * records the envelope sender in Return-Path; Delivered-To (Postfix, qmail, Dovecot) names
 * the address this copy was delivered for, which Sieve and vacation programs use to spot loops.
 */
export function traceHeaders(info: LocalDeliveryInfo): string {
  // Envelope addresses were checked in the SMTP session; a stray line break would still
  // forge a header, so it goes.
  const clean = (s: string) => s.replace(/[\r\n\0]/g, '');
  return `Return-Path: <${clean(info.sender)}>\nDelivered-To: ${clean(info.recipient)}\n`;
}

/**
 * Reading the stored message failed (as opposed to writing it out): always temporary, and the
 * destination must not keep what it got so far.
 */
export class MessageReadError extends Error {
  override name = 'MessageReadError';
}

/**
 * The message as a local store keeps it: trace headers, then the body with LF line ends.
 * A failure to read `body` surfaces as a MessageReadError; a consumer that stops early
 * (a closed pipe) simply ends it.
 */
export function localMessage(body: Readable, info: LocalDeliveryInfo): Readable {
  // pipeline() forwards a read error of the stored message to the stream we iterate.
  const lf = pipeline(body, new CrlfToLf(), () => undefined);
  return Readable.from(prepend(Buffer.from(traceHeaders(info)), lf), { objectMode: false });
}

async function* prepend(head: Buffer, rest: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  yield head;
  // Only errors from reading `rest` are read errors; one thrown in at `yield` (Readable.from
  // does that when the consumer fails, e.g. EPIPE) is the consumer's and passes unchanged.
  const it = rest[Symbol.asyncIterator]();
  try {
    for (;;) {
      let next: IteratorResult<Buffer>;
      try {
        next = await it.next();
      } catch (err) {
        throw new MessageReadError(`cannot read the queued message: ${(err as Error).message}`, { cause: err });
      }
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await it.return?.();
  }
}

/** The owner to give files we create: the user's, but only when we are root and can. */
export function fileOwner(info: LocalDeliveryInfo): { uid: number; gid: number } | undefined {
  return info.user && process.getuid?.() === 0 ? { uid: info.user.uid, gid: info.user.gid } : undefined;
}

/**
 * A failed write to a mailbox → result, after Postfix's mbox_dsn(): a full quota or a file
 * over its size limit is the recipient's mailbox being full (5.2.2, bounced, as Postfix and
 * Dovecot do); everything else — a full disk, a permission or path the admin can fix, an I/O
 * error, a read error of our own queue — is retried.
 */
export function fileErrorResult(what: string, err: unknown): DeliveryResult {
  const e = err as NodeJS.ErrnoException;
  const text = `${what}: ${e.message ?? String(err)}`;
  if (e.code === 'EDQUOT' || e.code === 'EFBIG') return { outcome: 'permfail', message: `5.2.2 mailbox full: ${text}` };
  if (e.code === 'ENOSPC') return { outcome: 'tempfail', message: `4.3.1 ${text}` };
  return { outcome: 'tempfail', message: `4.2.0 ${text}` };
}

/** write(2) may write less than asked (a signal, a nearly full disk); loop until all is out. */
export async function writeAll(fh: FileHandle, buf: Buffer): Promise<void> {
  for (let off = 0; off < buf.length; ) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    off += bytesWritten;
  }
}
