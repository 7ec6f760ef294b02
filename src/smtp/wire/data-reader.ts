// Message data after 354: finds the end ("\r\n.\r\n", or ".\r\n" as the first line) and removes
// the dot-stuffing (RFC 5321 §4.5.2), across any split of the bytes into chunks, handing on
// slices of the chunks themselves (no copy, no string). Only CR LF "." CR LF ends the data: the
// fake ends of SMTP smuggling (bare LF or CR around the dot) stay message content, for the data
// check to refuse. As in smtp-server, a dot after any LF is a stuffing dot when another follows.

const LF = 10;
const CR = 13;
const DOT = 46;
const DOT_BUF = Buffer.from('.');
const DOT_CR_BUF = Buffer.from('.\r');

/** Where the reader is when a chunk ends. */
const enum At {
  /** Inside a line. */
  Text,
  /** Just after a line end (or at the start of the data). */
  LineStart,
  /** A line start, then a dot, not yet handed on. */
  Dot,
  /** A line start after CR LF, a dot and a CR, not yet handed on. */
  DotCr,
}

export class DataReader {
  private at = At.LineStart;
  /** The line start follows CR LF (or is the start of the data): only then can ".\r\n" end it. */
  private afterCrLf = true;
  /** The last byte of the previous chunk was a CR. */
  private prevCr = false;

  /**
   * Reads one chunk; `emit` gets the message bytes in order.
   * @returns -1 while the data goes on, else the offset in `chunk` where the bytes after the
   *   terminator begin (the next commands).
   */
  feed(chunk: Buffer, emit: (b: Buffer) => void): number {
    const len = chunk.length;
    let i = 0;
    // A state left by the previous chunk first.
    if (this.at === At.Dot) {
      if (len === 0) return -1;
      const c = chunk[0]!;
      if (c === DOT) {
        this.at = At.Text; // the held dot was the stuffing one; this one is text
      } else if (c === CR && this.afterCrLf) {
        this.at = At.DotCr;
        i = 1;
      } else {
        emit(DOT_BUF);
        this.at = At.Text;
      }
    }
    if (this.at === At.DotCr) {
      if (i >= len) return -1;
      if (chunk[i] === LF) return this.ended(i + 1);
      emit(DOT_CR_BUF);
      this.at = At.Text;
      this.prevCr = true;
    }
    let from = i; // start of the bytes not yet handed on
    let lineStart = this.at === At.LineStart ? i : -1;
    let crLf = this.afterCrLf;
    for (;;) {
      if (lineStart !== -1) {
        // At a line start: a dot here is the end, a stuffing dot, or text.
        if (lineStart >= len) {
          this.flush(chunk, from, len, emit);
          this.at = At.LineStart;
          this.afterCrLf = crLf;
          return -1;
        }
        if (chunk[lineStart] === DOT) {
          const n1 = lineStart + 1;
          if (n1 >= len) {
            this.flush(chunk, from, lineStart, emit);
            this.at = At.Dot;
            this.afterCrLf = crLf;
            return -1;
          }
          const c1 = chunk[n1];
          if (c1 === DOT) {
            this.flush(chunk, from, lineStart, emit);
            from = n1; // drop the stuffing dot
          } else if (c1 === CR && crLf) {
            const n2 = n1 + 1;
            if (n2 >= len) {
              this.flush(chunk, from, lineStart, emit);
              this.at = At.DotCr;
              this.afterCrLf = crLf;
              return -1;
            }
            if (chunk[n2] === LF) {
              this.flush(chunk, from, lineStart, emit);
              return this.ended(n2 + 1);
            }
          }
        }
      }
      const lf = chunk.indexOf(LF, lineStart === -1 ? from : lineStart);
      if (lf === -1) {
        this.flush(chunk, from, len, emit);
        this.at = At.Text;
        this.prevCr = len > 0 ? chunk[len - 1] === CR : this.prevCr;
        return -1;
      }
      crLf = lf === 0 ? this.prevCr : chunk[lf - 1] === CR;
      lineStart = lf + 1;
    }
  }

  private flush(chunk: Buffer, from: number, to: number, emit: (b: Buffer) => void): void {
    if (to > from) {
      emit(chunk.subarray(from, to));
      this.prevCr = chunk[to - 1] === CR;
    }
  }

  private ended(rest: number): number {
    this.at = At.LineStart;
    this.afterCrLf = true;
    this.prevCr = false;
    return rest;
  }
}
