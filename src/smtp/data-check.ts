// Scans DATA as it streams past: bare CR, bare LF, NUL bytes and the size limit. A message
// with bare line endings is refused rather than "fixed", because different MTAs on the path
// would read its line structure differently (SMTP smuggling, CVE-2023-51764/51765/51766).

export type DataProblem = 'bare-lf' | 'bare-cr' | 'nul' | 'too-big' | 'line-too-long';

const CR = 13;
const LF = 10;

export class DataChecker {
  problem: DataProblem | null = null;
  size = 0;
  private prevCR = false;
  /** Length of the line in progress (bytes since the last LF). */
  private lineLength = 0;

  /** @param maxLineLength longest line without its CRLF; 0 = no limit. */
  constructor(private readonly maxSize: number, private readonly maxLineLength = 0) {}

  /** Scans the next chunk; false once a problem has been found (the rest need not be stored). */
  scan(chunk: Buffer): boolean {
    if (this.problem) return false;
    this.size += chunk.length;
    if (this.size > this.maxSize) return this.found('too-big');
    if (chunk.length === 0) return true;
    if (chunk.indexOf(0) !== -1) return this.found('nul');
    if (this.prevCR && chunk[0] !== LF) return this.found('bare-cr');
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
      const cr = i === 0 ? this.prevCR : chunk[i - 1] === CR;
      if (!cr) return this.found('bare-lf');
    }
    const last = chunk.length - 1;
    for (let i = chunk.indexOf(CR); i !== -1 && i < last; i = chunk.indexOf(CR, i + 1)) {
      if (chunk[i + 1] !== LF) return this.found('bare-cr');
    }
    this.prevCR = chunk[last] === CR;
    if (this.maxLineLength && !this.linesFit(chunk)) return this.found('line-too-long');
    return true;
  }

  /** Tracks line lengths across chunks; every LF here is known to follow a CR. */
  private linesFit(chunk: Buffer): boolean {
    const limit = this.maxLineLength + 2; // the CRLF itself
    let start = 0;
    for (let i = chunk.indexOf(LF); i !== -1; i = chunk.indexOf(LF, i + 1)) {
      if (this.lineLength + (i + 1 - start) > limit) return false;
      this.lineLength = 0;
      start = i + 1;
    }
    this.lineLength += chunk.length - start;
    // A line still in progress may hold its CR already; allow for it.
    return this.lineLength <= limit - 1;
  }

  /** Call at end of data. */
  finish(): DataProblem | null {
    if (!this.problem && this.prevCR) this.problem = 'bare-cr';
    return this.problem;
  }

  private found(p: DataProblem): false {
    this.problem = p;
    return false;
  }
}
