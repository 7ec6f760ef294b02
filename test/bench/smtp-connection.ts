// A minimal SMTP client on a raw `net` socket (no libraries), for the load generator (load.ts),
// the huge-message sender (huge-message.ts) and tests that need the bytes under their control.

import net from 'node:net';
import { once } from 'node:events';

/** One SMTP reply: the numeric code and the text lines (without the code prefix). */
export interface Reply {
  code: number;
  lines: string[];
}

export const is2xx = (r: Reply): boolean => r.code >= 200 && r.code < 300;

/** A reply other than the expected one. The session itself is still usable. */
export class ReplyError extends Error {
  constructor(
    readonly stage: string,
    readonly reply: Reply,
  ) {
    super(`${stage}: ${reply.code} ${reply.lines.join(' / ')}`);
  }
}

/** The connection failed (closed, reset, timed out). The session is unusable. */
export class ConnectionError extends Error {}

/**
 * A minimal SMTP client connection: writes raw bytes, reads replies in order.
 * Replies are parsed from a latin1 buffer; multi-line replies ("250-...") are joined.
 */
export class SmtpConnection {
  private buf = '';
  private pendingLines: string[] = [];
  private readonly replies: Reply[] = [];
  private waiter: { resolve: (r: Reply) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** EHLO keywords advertised by the server, upper-cased (e.g. "PIPELINING", "SIZE 104857600"). */
  extensions: string[] = [];

  private constructor(
    readonly socket: net.Socket,
    private readonly timeoutMs: number,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => this.fail(new ConnectionError(`socket error: ${e.message}`)));
    socket.on('close', () => this.fail(new ConnectionError('connection closed by server')));
  }

  /** Connect, read the greeting and say EHLO. */
  static async open(host: string, port: number, helo: string, timeoutMs = 30_000): Promise<SmtpConnection> {
    const socket = net.connect({ host, port });
    const conn = new SmtpConnection(socket, timeoutMs);
    try {
      await once(socket, 'connect'); // rejects on 'error'
    } catch (e) {
      throw new ConnectionError(`connect ${host}:${port}: ${(e as Error).message}`);
    }
    const greeting = await conn.read();
    if (greeting.code !== 220) {
      conn.close();
      throw new ReplyError('greeting', greeting);
    }
    conn.write(`EHLO ${helo}\r\n`);
    const ehlo = await conn.read();
    if (ehlo.code !== 250) {
      conn.close();
      throw new ReplyError('EHLO', ehlo);
    }
    conn.extensions = ehlo.lines.slice(1).map((l) => l.trim().toUpperCase());
    return conn;
  }

  has(ext: string): boolean {
    return this.extensions.some((e) => e === ext || e.startsWith(ext + ' '));
  }

  get broken(): boolean {
    return this.failure !== null;
  }

  write(data: string | Buffer): boolean {
    if (this.failure) throw this.failure;
    return this.socket.write(data);
  }

  /** Write, and if the socket buffer is full wait until it drains (or the connection fails). */
  async writeAndDrain(data: string | Buffer): Promise<void> {
    if (this.write(data)) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        cleanup();
        resolve();
      };
      const onGone = (): void => {
        cleanup();
        reject(this.failure ?? new ConnectionError('connection closed while writing'));
      };
      const cleanup = (): void => {
        this.socket.off('drain', onDrain);
        this.socket.off('close', onGone);
        this.socket.off('error', onGone);
      };
      this.socket.on('drain', onDrain);
      this.socket.on('close', onGone);
      this.socket.on('error', onGone);
    });
  }

  /** The next reply from the server (in order). */
  read(): Promise<Reply> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
      this.timer = setTimeout(
        () => this.fail(new ConnectionError(`no reply within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
    });
  }

  /** Send QUIT, wait briefly for 221, then close. Never throws. */
  async quit(): Promise<void> {
    if (this.failure) return;
    try {
      this.write('QUIT\r\n');
      await Promise.race([this.read(), new Promise((r) => setTimeout(r, 1000))]);
    } catch {
      // ignore: we are leaving anyway
    }
    this.close();
  }

  close(): void {
    this.fail(new ConnectionError('closed by client'));
    this.socket.destroy();
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('latin1');
    let eol: number;
    while ((eol = this.buf.indexOf('\r\n')) >= 0) {
      const line = this.buf.slice(0, eol);
      this.buf = this.buf.slice(eol + 2);
      // "250-text" continues a reply, "250 text" (or a bare "250") ends it.
      this.pendingLines.push(line.slice(4));
      if (line.length < 4 || line[3] !== '-') {
        const reply: Reply = { code: Number(line.slice(0, 3)) || 0, lines: this.pendingLines };
        this.pendingLines = [];
        this.deliver(reply);
      }
    }
  }

  private deliver(reply: Reply): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      if (this.timer) clearTimeout(this.timer);
      w.resolve(reply);
    } else {
      this.replies.push(reply);
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    if (this.timer) clearTimeout(this.timer);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.reject(err);
    }
    this.socket.destroy();
  }
}
