// Queue ids, written in hex. A message id is 16 hex digits: 12 of milliseconds (so ids sort by
// arrival) and 4 random. An envelope (one recipient of a message) appends 4 more digits, so one
// grep for the message id finds every recipient line in the logs (OpenSMTPD's msgid/evpid idea).

import { randomBytes } from 'node:crypto';

let lastMs = 0;
let seq = 0;

export function newMessageId(): string {
  const now = Date.now();
  // Within one millisecond keep ids unique and ordered with a counter in the random part.
  if (now === lastMs) seq = (seq + 1) & 0xffff;
  else {
    lastMs = now;
    seq = randomBytes(2).readUInt16BE(0) & 0x0fff;
  }
  return now.toString(16).toUpperCase().padStart(12, '0') + seq.toString(16).toUpperCase().padStart(4, '0');
}

export function envelopeId(msgid: string, index: number): string {
  return msgid + index.toString(16).toUpperCase().padStart(4, '0');
}

export function isMessageId(s: string): boolean {
  return /^[0-9A-F]{16}$/i.test(s);
}

export function isEnvelopeId(s: string): boolean {
  return /^[0-9A-F]{20}$/i.test(s);
}
