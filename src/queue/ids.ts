// Queue ids, written in hex: the one place that knows their format. A message id is 16 hex
// digits: 12 of milliseconds (so ids sort by arrival) and 4 random. An envelope (one recipient
// of a message) appends 4 more digits, so one grep for the message id finds every recipient
// line in the logs (OpenSMTPD's msgid/evpid idea). Everything else asks this file.

import { randomBytes } from 'node:crypto';

const MESSAGE_DIGITS = 16;
const RECIPIENT_DIGITS = 4;

let lastMs = 0;
let seq = 0;
/** Random bits taken 512 bytes at a time (one randomBytes call per message showed in the profile). */
let pool = Buffer.alloc(0);
let poolAt = 0;

function random16(): number {
  if (poolAt + 2 > pool.length) {
    pool = randomBytes(512);
    poolAt = 0;
  }
  const v = pool.readUInt16BE(poolAt);
  poolAt += 2;
  return v;
}

/** A new message id for a message arriving at `now` (the caller's clock, ms since the epoch). */
export function newMessageId(now: number): string {
  // Within one millisecond keep ids unique and ordered with a counter in the random part.
  if (now === lastMs) seq = (seq + 1) & 0xffff;
  else {
    lastMs = now;
    seq = random16() & 0x0fff;
  }
  return hex(now, 12) + hex(seq, 4);
}

export function envelopeId(msgid: string, index: number): string {
  return msgid + hex(index, RECIPIENT_DIGITS);
}

/** The message a message or envelope id belongs to, in upper case. */
export function messageIdOf(id: string): string {
  return id.slice(0, MESSAGE_DIGITS).toUpperCase();
}

/** The recipient part of an envelope id ("0001"), as shown beside its message id. */
export function recipientPartOf(envId: string): string {
  return envId.slice(MESSAGE_DIGITS);
}

/** The recipient number of an envelope id (0 for the first recipient). */
export function recipientIndexOf(envId: string): number {
  return Number.parseInt(recipientPartOf(envId), 16);
}

export function isMessageId(s: string): boolean {
  return /^[0-9A-F]{16}$/i.test(s);
}

export function isEnvelopeId(s: string): boolean {
  return /^[0-9A-F]{20}$/i.test(s);
}

function hex(n: number, digits: number): string {
  return n.toString(16).toUpperCase().padStart(digits, '0');
}
