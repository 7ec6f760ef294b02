// Replies: formatted with their enhanced status code (RFC 2034/3463) and gathered, so that the
// replies to one pipelined group of commands leave in one write() (RFC 2920 §3.2 asks servers to
// batch them; each write is a syscall and, with Nagle off, a packet).

import type { Writable } from 'node:stream';

/** The enhanced code a reply gets when its text does not start with one (as smtp-server did). */
const DEFAULT_ENHANCED: Record<number, string> = {
  211: '2.0.0', 214: '2.0.0', 221: '2.0.0', 235: '2.7.0', 250: '2.0.0', 252: '2.1.5',
  421: '4.4.2', 450: '4.2.1', 451: '4.3.0', 452: '4.2.2', 454: '4.7.0',
  500: '5.5.2', 501: '5.5.4', 502: '5.5.1', 503: '5.5.1', 504: '5.5.4', 530: '5.7.0', 535: '5.7.8',
  538: '5.7.0', 550: '5.1.1', 551: '5.1.6', 552: '5.2.2', 553: '5.1.3', 554: '5.6.0', 555: '5.5.4',
};

// Control characters never go out: a reply text may carry what a client sent (an address).
const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const CONTROL_ALL = /[\x00-\x1f\x7f-\x9f]/g;

/** "5.7.1 …": the text brings its own enhanced code. */
function hasEnhanced(text: string): boolean {
  const c = text.charCodeAt(0);
  return (c === 50 || c === 52 || c === 53) && text.charCodeAt(1) === 46 && /^[245]\.\d{1,3}\.\d{1,3} /.test(text);
}

function clean(text: string): string {
  return CONTROL.test(text) ? text.replace(CONTROL_ALL, ' ') : text;
}

/** The enhanced code for `code` unless `text` has one; none for 2xx greetings/EHLO (`plain`) and 3xx. */
export function replyLine(code: number, text: string, plain = false): string {
  if (plain || (code >= 300 && code < 400) || hasEnhanced(text)) return `${code} ${clean(text)}\r\n`;
  const enhanced = DEFAULT_ENHANCED[code] ?? `${Math.floor(code / 100)}.0.0`;
  return `${code} ${enhanced} ${clean(text)}\r\n`;
}

/** A multi-line reply (EHLO): no enhanced codes. */
export function replyLines(code: number, lines: readonly string[]): string {
  let out = '';
  for (let i = 0; i < lines.length; i++) out += `${code}${i < lines.length - 1 ? '-' : ' '}${clean(lines[i]!)}\r\n`;
  return out;
}

export class ReplyWriter {
  private out = '';

  constructor(private sink: Writable) {}

  /** After STARTTLS: the TLS socket. */
  setSink(sink: Writable): void {
    this.sink = sink;
  }

  get hasPending(): boolean {
    return this.out.length > 0;
  }

  add(reply: string): void {
    this.out += reply;
  }

  /** Writes what was gathered; false when the socket's buffer is full (stop reading commands). */
  flush(): boolean {
    if (!this.out) return true;
    const s = this.out;
    this.out = '';
    if (this.sink.destroyed || !this.sink.writable) return true;
    return this.sink.write(s);
  }

  /** What was gathered, taken out (to be written with a callback). */
  take(): string {
    const s = this.out;
    this.out = '';
    return s;
  }

  /** Drops what was gathered (the connection is being torn down). */
  discard(): void {
    this.out = '';
  }
}
