// SMTP load generator on raw `net` sockets (no libraries).
//
// runLoad(): N messages of S bytes over C concurrent connections, like `smtp-source -d -s C -m N`:
// each connection says EHLO once and then sends message after message over the same session.
// When the server advertises PIPELINING, MAIL + RCPT + DATA go out as one write (RFC 2920) and the
// three replies are read afterwards; the body follows after 354 and the client waits for the reply
// to the final dot before starting the next transaction.
//
// sendHugeMessage(): one big message (e.g. 50 MB) produced by a generator chunk by chunk and written
// with backpressure, so the client never holds more than a chunk or two in memory.

import net from 'node:net';
import { once } from 'node:events';
import { nowMs } from './common.js';

/** One SMTP reply: the numeric code and the text lines (without the code prefix). */
export interface Reply {
  code: number;
  lines: string[];
}

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

// ---------------------------------------------------------------------------------------------
// Message content

const FILLER = 'The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ.';

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

// ---------------------------------------------------------------------------------------------
// Load run

export interface LoadOptions {
  host: string;
  port: number;
  /** total number of messages */
  messages: number;
  /** bytes per message (headers + body, before dot-stuffing) */
  size: number;
  /** concurrent connections */
  concurrency: number;
  from?: string;
  to?: string;
  helo?: string;
  /** per-reply timeout; default 30 s */
  timeoutMs?: number;
  /** set false to never pipeline even when advertised */
  pipelining?: boolean;
}

export interface LoadResult {
  /** wall time from the first connect to the last accepted message */
  elapsedMs: number;
  /** messages answered with 2xx after the final dot */
  accepted: number;
  failed: number;
  /** accepted per second */
  rate: number;
  /** whether the server advertised PIPELINING and we used it */
  pipelined: boolean;
  /** the first few distinct error texts */
  errors: string[];
}

const is2xx = (r: Reply): boolean => r.code >= 200 && r.code < 300;

/** One transaction on an open session. Throws ReplyError (session fine) or ConnectionError. */
async function sendOne(conn: SmtpConnection, pipeline: boolean, from: string, to: string, body: Buffer): Promise<void> {
  const size = conn.has('SIZE') ? ` SIZE=${body.length}` : '';
  let mail: Reply, rcpt: Reply, data: Reply;
  if (pipeline) {
    conn.write(`MAIL FROM:<${from}>${size}\r\nRCPT TO:<${to}>\r\nDATA\r\n`);
    mail = await conn.read();
    rcpt = await conn.read();
    data = await conn.read();
  } else {
    conn.write(`MAIL FROM:<${from}>${size}\r\n`);
    mail = await conn.read();
    if (!is2xx(mail)) throw await reset(conn, new ReplyError('MAIL', mail));
    conn.write(`RCPT TO:<${to}>\r\n`);
    rcpt = await conn.read();
    if (!is2xx(rcpt)) throw await reset(conn, new ReplyError('RCPT', rcpt));
    conn.write('DATA\r\n');
    data = await conn.read();
  }
  if (data.code === 354 && (!is2xx(mail) || !is2xx(rcpt))) {
    // A pipelining server that accepted DATA although MAIL/RCPT failed: send an empty message.
    conn.write('.\r\n');
    await conn.read();
  }
  if (!is2xx(mail)) throw await reset(conn, new ReplyError('MAIL', mail));
  if (!is2xx(rcpt)) throw await reset(conn, new ReplyError('RCPT', rcpt));
  if (data.code !== 354) throw await reset(conn, new ReplyError('DATA', data));
  await conn.writeAndDrain(body);
  const end = await conn.read();
  if (!is2xx(end)) throw await reset(conn, new ReplyError('end of data', end));
}

/** RSET after a refused transaction so the session can go on; returns the error to throw. */
async function reset(conn: SmtpConnection, err: ReplyError): Promise<ReplyError> {
  conn.write('RSET\r\n');
  await conn.read();
  return err;
}

/** Send `messages` messages over `concurrency` sessions; see the file comment. */
export async function runLoad(opts: LoadOptions): Promise<LoadResult> {
  const from = opts.from ?? 'from@example.com';
  const to = opts.to ?? 'to@example.org';
  const helo = opts.helo ?? 'bench.client';
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const template = new MessageTemplate(opts.size, from, to);

  let next = 0; // next message number to hand out (shared by all sessions)
  let accepted = 0;
  let failed = 0;
  let pipelined = false;
  const errors = new Set<string>();
  const note = (e: unknown): void => {
    if (errors.size < 5) errors.add(e instanceof Error ? e.message : String(e));
  };

  const started = nowMs();
  let lastAccepted = started;

  const worker = async (): Promise<void> => {
    let conn: SmtpConnection | null = null;
    let connectFailures = 0;
    while (next < opts.messages) {
      if (!conn || conn.broken) {
        try {
          conn = await SmtpConnection.open(opts.host, opts.port, helo, timeoutMs);
          connectFailures = 0;
        } catch (e) {
          note(e);
          conn = null;
          // Give up on this session after 3 failed connects in a row; other sessions carry on.
          if (++connectFailures >= 3) return;
          continue;
        }
      }
      const pipeline = opts.pipelining !== false && conn.has('PIPELINING');
      pipelined ||= pipeline;
      const seq = next++;
      try {
        await sendOne(conn, pipeline, from, to, template.build(seq));
        accepted++;
        lastAccepted = nowMs();
      } catch (e) {
        failed++;
        note(e);
        if (!(e instanceof ReplyError)) conn.close(); // connection-level: reconnect
      }
    }
    await conn?.quit();
  };

  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker));
  // Messages never attempted because every session gave up count as failures too.
  failed += Math.max(0, opts.messages - accepted - failed);
  const elapsedMs = (accepted > 0 ? lastAccepted : nowMs()) - started;
  return {
    elapsedMs,
    accepted,
    failed,
    rate: elapsedMs > 0 ? (accepted * 1000) / elapsedMs : 0,
    pipelined,
    errors: [...errors],
  };
}

// ---------------------------------------------------------------------------------------------
// One huge message

/**
 * Generate a message of exactly `bytes` bytes (headers + body, before dot-stuffing) as dot-stuffed
 * CRLF chunks of roughly `chunkSize` bytes. Lines are numbered so the content is not one repeated
 * block; every 32nd line starts with "." to exercise the server's un-stuffing.
 */
export function* hugeMessageChunks(bytes: number, from: string, to: string, chunkSize = 64 * 1024): Generator<Buffer> {
  const headers =
    `From: <${from}>\r\nTo: <${to}>\r\nSubject: tidemail bench, one huge message\r\n` +
    `Date: ${new Date().toUTCString().replace('GMT', '+0000')}\r\n` +
    `Message-ID: <huge.${Date.now().toString(36)}@bench.test>\r\n` +
    `MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  let remaining = bytes - headers.length;
  let parts: string[] = [headers];
  let partLen = headers.length;
  let n = 0;
  while (remaining > 0) {
    let line = (n % 32 === 31 ? '.' : '') + `${String(n).padStart(9, '0')} ${FILLER}`;
    if (line.length + 2 > remaining) line = line.slice(0, Math.max(0, remaining - 2));
    remaining -= line.length + 2;
    const stuffed = dotStuff(line) + '\r\n';
    parts.push(stuffed);
    partLen += stuffed.length;
    n++;
    if (partLen >= chunkSize) {
      yield Buffer.from(parts.join(''), 'latin1');
      parts = [];
      partLen = 0;
    }
  }
  if (partLen > 0) yield Buffer.from(parts.join(''), 'latin1');
}

export interface HugeResult {
  accepted: boolean;
  /** the reply to the final dot (or the error) */
  reply: string;
  elapsedMs: number;
  /** bytes written after the 354, including stuffing and the final ".\r\n" */
  bytesSent: number;
}

/** Send one message of `bytes` bytes, streamed from hugeMessageChunks() with backpressure. */
export async function sendHugeMessage(opts: {
  host: string;
  port: number;
  bytes: number;
  from?: string;
  to?: string;
  timeoutMs?: number;
}): Promise<HugeResult> {
  const from = opts.from ?? 'from@example.com';
  const to = opts.to ?? 'to@example.org';
  const started = nowMs();
  let bytesSent = 0;
  let conn: SmtpConnection | null = null;
  try {
    conn = await SmtpConnection.open(opts.host, opts.port, 'bench.client', opts.timeoutMs ?? 120_000);
    const size = conn.has('SIZE') ? ` SIZE=${opts.bytes}` : '';
    for (const [cmd, want] of [
      [`MAIL FROM:<${from}>${size}`, 2],
      [`RCPT TO:<${to}>`, 2],
      ['DATA', 3],
    ] as const) {
      conn.write(cmd + '\r\n');
      const r = await conn.read();
      if (Math.floor(r.code / 100) !== want) throw new ReplyError(cmd.split(':')[0]!, r);
    }
    for (const chunk of hugeMessageChunks(opts.bytes, from, to)) {
      await conn.writeAndDrain(chunk);
      bytesSent += chunk.length;
    }
    conn.write('.\r\n');
    bytesSent += 3;
    const end = await conn.read();
    await conn.quit();
    return {
      accepted: is2xx(end),
      reply: `${end.code} ${end.lines.join(' / ')}`,
      elapsedMs: nowMs() - started,
      bytesSent,
    };
  } catch (e) {
    conn?.close();
    return { accepted: false, reply: e instanceof Error ? e.message : String(e), elapsedMs: nowMs() - started, bytesSent };
  }
}
