// Message text for the load generator: a template of a given size (dot-stuffed, each copy with
// its own Message-ID) and the filler its lines are made of.

export const FILLER = 'The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ.';

/**
 * Dot-stuff one line (RFC 5321 4.5.2): a line starting with "." gets another ".".
 * `line` has no CRLF.
 */
export function dotStuff(line: string): string {
  return line.startsWith('.') ? '.' + line : line;
}

/**
 * A message template of about `size` bytes (headers + body, before dot-stuffing), already
 * dot-stuffed and in CRLF form. Every 16th body line starts with "." to exercise the stuffing.
 * Only the Message-ID differs between messages; build() adds it and the final ".\r\n".
 */
export class MessageTemplate {
  private readonly head: Buffer;
  private readonly tail: Buffer;

  constructor(
    readonly size: number,
    readonly from: string,
    readonly to: string,
    private readonly runId = Date.now().toString(36),
  ) {
    const headers =
      `From: <${from}>\r\n` +
      `To: <${to}>\r\n` +
      `Subject: tidemail bench\r\n` +
      `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
      `MIME-Version: 1.0\r\n` +
      `Content-Type: text/plain; charset=us-ascii\r\n`;
    // The Message-ID line is "Message-ID: <bench.RUN.NNNNNNNN@bench.test>\r\n"; count it in.
    const midLen = `Message-ID: <bench.${this.runId}.00000000@bench.test>\r\n`.length;
    let remaining = Math.max(0, size - headers.length - midLen - 2); // 2 = blank line
    const lines: string[] = [];
    let n = 0;
    while (remaining > 0) {
      let line = (n % 16 === 15 ? '.' : '') + `${String(n).padStart(5, '0')} ${FILLER}`;
      if (line.length + 2 > remaining) line = line.slice(0, Math.max(0, remaining - 2));
      lines.push(dotStuff(line) + '\r\n');
      remaining -= line.length + 2;
      n++;
    }
    this.head = Buffer.from(headers, 'latin1');
    this.tail = Buffer.from('\r\n' + lines.join('') + '.\r\n', 'latin1');
  }

  /** Bytes for message number `seq`, ready to write after the 354 (ends with ".\r\n"). */
  build(seq: number): Buffer {
    const mid = Buffer.from(
      `Message-ID: <bench.${this.runId}.${String(seq).padStart(8, '0')}@bench.test>\r\n`,
      'latin1',
    );
    return Buffer.concat([this.head, mid, this.tail]);
  }
}

