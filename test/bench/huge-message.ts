// One huge message (e.g. 50 MB) produced by a generator chunk by chunk and written with
// backpressure, so the client never holds more than a chunk or two in memory.

import { nowMs } from './common.js';
import { dotStuff, FILLER } from './message-content.js';
import { is2xx, ReplyError, SmtpConnection } from './smtp-connection.js';

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
