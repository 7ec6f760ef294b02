// The SMTP engine talks to a socket; `sendmail -bs` and inetd `smtpd` have a pipe pair (or an
// inherited socket) instead. This Duplex stands in for the socket and fixes what a pipe does
// differently:
//
// - Scripted clients write the whole session at once and close their end. Input is held back
//   until the greeting is out (as a client waits for 220), and the end of input is not the end
//   of the session: commands already read may still be running (a DATA commit). So at EOF we
//   append a QUIT, which the engine runs after everything before it, and the session ends when
//   the engine closes its side. EOF in the middle of DATA aborts the message, as a dropped
//   connection does.
// - A local user's script writes LF line ends (sendmail -bs has always accepted them); for local
//   sessions bare LF becomes CRLF, or the final "." would never be seen. Network sessions
//   (inetd) get no such help: there a bare LF is refused as on the daemon's port.

import { Duplex } from 'node:stream';

const CR = Buffer.from('\r');

export class StdioSession extends Duplex {
  readyState: 'open' | 'closed' = 'open';
  readonly remoteAddress: string;
  readonly localAddress = '127.0.0.1';
  readonly remotePort = 0;
  readonly localPort = 0;
  private greeted = false;
  private paused = true;
  private inData = false;
  private partial = '';
  private lastWasCr = false;
  private readonly fixLineEnds: boolean;

  constructor(
    private readonly input: NodeJS.ReadableStream,
    private readonly output: NodeJS.WritableStream,
    opts: { remoteAddress: string; fixLineEnds: boolean },
  ) {
    super({ allowHalfOpen: true, decodeStrings: true });
    this.remoteAddress = opts.remoteAddress;
    this.fixLineEnds = opts.fixLineEnds;
    input.pause();
    input.on('data', (d: Buffer) => this.fromClient(typeof d === 'string' ? Buffer.from(d) : d));
    input.on('end', () => this.inputEnded());
    input.on('error', (err: Error) => this.destroy(err));
    output.on('error', () => this.destroy()); // EPIPE: the client went away
  }

  private fromClient(raw: Buffer): void {
    const d = this.fixLineEnds ? this.crlf(raw) : raw;
    this.trackDataMode(d);
    if (!this.push(d)) {
      this.paused = true;
      this.input.pause();
    }
  }

  /** Bare LF → CRLF (a CR that ended the previous chunk counts). */
  private crlf(d: Buffer): Buffer {
    const bare: number[] = [];
    for (let i = d.indexOf(10); i >= 0; i = d.indexOf(10, i + 1)) {
      if (!(i === 0 ? this.lastWasCr : d[i - 1] === 13)) bare.push(i);
    }
    if (d.length) this.lastWasCr = d[d.length - 1] === 13;
    if (!bare.length) return d;
    const parts: Buffer[] = [];
    let from = 0;
    for (const i of bare) {
      parts.push(d.subarray(from, i), CR);
      from = i;
    }
    parts.push(d.subarray(from));
    return Buffer.concat(parts);
  }

  /** Follows DATA … "." in what the client sends, to know whether EOF cut a message short. */
  private trackDataMode(d: Buffer): void {
    // As the SMTP engine reads them: a command line ends at LF (a CR before it is dropped), a
    // line of message data only at CRLF, as the end of the data does. With commands split on
    // CRLF alone, a "DATA" ended by a bare LF went unseen and the QUIT appended at EOF could
    // complete a final "." the client never ended (a cut-off message accepted).
    const text = this.partial + d.toString('latin1');
    let pos = 0;
    for (;;) {
      const end = this.inData ? text.indexOf('\r\n', pos) : text.indexOf('\n', pos);
      if (end === -1) break;
      if (this.inData) {
        if (end - pos === 1 && text[pos] === '.') this.inData = false;
        pos = end + 2;
      } else {
        if (/^DATA\s*$/i.test(text.slice(pos, end).replace(/\r$/, ''))) this.inData = true;
        pos = end + 1;
      }
    }
    const rest = text.slice(pos);
    this.partial = rest.length > 65536 ? rest.slice(-1024) : rest;
  }

  private inputEnded(): void {
    if (this.destroyed || this.readyState !== 'open') return;
    if (this.inData) {
      this.destroy(); // an unfinished message is not accepted
      return;
    }
    this.push(Buffer.from(`${this.partial ? '\r\n' : ''}QUIT\r\n`));
  }

  override _read(): void {
    if (this.paused && this.greeted) {
      this.paused = false;
      this.input.resume();
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.output.write(chunk, (err) => {
      if (!this.greeted) {
        this.greeted = true;
        this._read();
      }
      cb(err ?? null);
    });
  }

  override _final(cb: (err?: Error | null) => void): void {
    // The engine closed the session (QUIT, 421): end our readable side too.
    this.readyState = 'closed';
    this.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.readyState = 'closed';
    this.input.pause();
    cb(err);
  }
}
