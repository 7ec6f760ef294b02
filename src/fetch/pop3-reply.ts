// What a POP3 server's replies mean, apart from reading them off the socket (the session in
// pop3-client.ts): the error classes, the status line (+OK / -ERR), STAT, the LIST and UIDL
// listings, and printable() for the server text that reaches an error message (a hostile reply
// must not drive the terminal of whoever reads `tidemail status` or the log).

import { createHash } from 'node:crypto';
import { TidemailError } from '../errors.js';

/** A POP3 failure: -ERR from the server (`response` set), a protocol violation, or the network. */
export class Pop3Error extends TidemailError {
  override name = 'Pop3Error';
  /** The server's -ERR line, when it sent one. */
  readonly response: string | undefined;
  constructor(message: string, response?: string, options?: ErrorOptions) {
    super(message, options);
    this.response = response;
  }
}

/** A multi-line reply went over its byte cap; the connection has been cut. */
export class Pop3LimitError extends Pop3Error {
  override name = 'Pop3LimitError';
  constructor(
    message: string,
    /** Bytes of the reply read when it was cut (the cap plus at most one line). */
    readonly read: number,
    readonly limit: number,
  ) {
    super(message);
  }
}

/** The TLS handshake failed, most often a certificate that does not verify: a setup problem. */
export class Pop3TlsError extends Pop3Error {
  override name = 'Pop3TlsError';
}

/** A failure to connect (or of the TLS handshake) as a Pop3Error; a TLS one as Pop3TlsError. */
export function connectError(label: string, err: NodeJS.ErrnoException): Pop3Error {
  if (err instanceof Pop3Error) return err;
  const tlsProblem = /certificate|self.signed|SSL|TLS|handshake|alert/i.test(err.message) || (err.code ?? '').startsWith('ERR_SSL') || (err.code ?? '').includes('CERT');
  if (tlsProblem) return new Pop3TlsError(`TLS to POP3 server ${label} failed: ${err.message} (certificates are verified)`, undefined, { cause: err });
  return new Pop3Error(`cannot connect to POP3 server ${label}: ${err.code ?? err.message}`, undefined, { cause: err });
}

/**
 * A status line (already printable) in reply to `what` from server `label`.
 * @returns the text after "+OK".
 * @throws Pop3Error on -ERR (with `response`) or a line that is neither.
 */
export function statusText(label: string, what: string, line: string): string {
  if (line.startsWith('+OK')) return line.slice(3).trim();
  if (line.startsWith('-ERR')) throw new Pop3Error(`${label} refused ${what}: ${line.slice(0, 512)}`, line.slice(0, 512));
  throw new Pop3Error(`${label} answered ${what} with "${line.slice(0, 100)}", not +OK/-ERR (is this a POP3 server?)`);
}

/** STAT's "+OK count size" (the text after +OK). */
export function parseStat(label: string, text: string): { count: number; size: number } {
  const m = /^(\d+)\s+(\d+)/.exec(text);
  if (!m) throw new Pop3Error(`${label}: malformed STAT reply "+OK ${text}"`);
  return { count: Number(m[1]), size: Number(m[2]) };
}

/** The lines of a LIST or UIDL listing: message number → `value` of the second word. */
export function parseListing<T>(lines: Buffer[], value: (s: string) => T): Map<number, T> {
  const out = new Map<number, T>();
  for (const l of lines) {
    const m = /^(\d+)[ \t]+(\S+)/.exec(l.toString('latin1'));
    if (m) out.set(Number(m[1]), value(m[2]!));
  }
  return out;
}

/**
 * A LIST size in octets.
 * @throws Pop3Error on a size that is not a number: it would make every size limit void.
 */
export function listSize(label: string, s: string): number {
  if (!/^\d{1,15}$/.test(s)) throw new Pop3Error(`${label}: malformed LIST size "${printable(s).slice(0, 40)}"`);
  return Number(s);
}

/**
 * A UIDL id as stored: one outside the RFC's 1–70 printable characters is replaced by "h:" + its
 * sha256, so it can be stored and shown safely and still tells messages apart.
 */
export function uidlId(s: string): string {
  return /^[\x21-\x7e]{1,70}$/.test(s) ? s : `h:${createHash('sha256').update(s, 'latin1').digest('hex')}`;
}

/**
 * Server text made safe to show: control characters (C0, DEL, C1: terminal escapes, bells,
 * backspaces) and the bidirectional overrides become "?".
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, '?');
}
