// Command lines out of the bytes a client sends. One indexOf per line over the bytes held, no
// string made of anything but the line itself. A line ends at LF (a CR before it is dropped):
// smtp-server read commands that way and clients that end commands with a bare LF still exist;
// message data is another matter (data-reader.ts, data-check.ts).

const LF = 10;
const CR = 13;

/** nextLine() when the line (or the part of it held so far) is over the limit. */
export const TOO_LONG = Symbol('line too long');

export class LineReader {
  private buf: Buffer | null = null;
  private pos = 0;

  /** @param maxLength longest command line without its line end */
  constructor(private readonly maxLength: number) {}

  /** Bytes held and not yet read. */
  get pending(): number {
    return this.buf ? this.buf.length - this.pos : 0;
  }

  push(chunk: Buffer): void {
    if (!this.buf || this.pos >= this.buf.length) {
      this.buf = chunk;
      this.pos = 0;
    } else {
      // Only a partial line (or commands queued behind a slow one) is ever copied.
      this.buf = Buffer.concat([this.buf.subarray(this.pos), chunk]);
      this.pos = 0;
    }
  }

  /** The next complete line (UTF-8, no line end), null when none is complete yet, or TOO_LONG. */
  nextLine(): string | null | typeof TOO_LONG {
    const buf = this.buf;
    if (!buf) return null;
    const start = this.pos;
    const lf = buf.indexOf(LF, start);
    if (lf === -1) {
      if (buf.length - start > this.maxLength + 1) return this.overflow(); // +1: a CR may be waiting for its LF
      return null;
    }
    this.pos = lf + 1;
    const end = lf > start && buf[lf - 1] === CR ? lf - 1 : lf;
    if (end - start > this.maxLength) return this.overflow();
    if (this.pos >= buf.length) this.buf = null;
    return buf.toString('utf8', start, end);
  }

  /** Everything held and not read as a line (the start of message data); empties the reader. */
  takeRest(): Buffer | null {
    const buf = this.buf;
    this.buf = null;
    if (!buf || this.pos >= buf.length) return null;
    return buf.subarray(this.pos);
  }

  private overflow(): typeof TOO_LONG {
    this.buf = null;
    return TOO_LONG;
  }
}
