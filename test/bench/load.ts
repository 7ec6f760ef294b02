// SMTP load generator on raw `net` sockets (no libraries).
//
// runLoad(): N messages of S bytes over C concurrent connections, like `smtp-source -d -s C -m N`:
// each connection says EHLO once and then sends message after message over the same session.
// When the server advertises PIPELINING, MAIL + RCPT + DATA go out as one write (RFC 2920) and the
// three replies are read afterwards; the body follows after 354 and the client waits for the reply
// to the final dot before starting the next transaction.
//
// The connection is smtp-connection.ts, the message text message-content.ts; one huge message
// streamed with backpressure is huge-message.ts.

import { nowMs } from './common.js';
import { MessageTemplate } from './message-content.js';
import { is2xx, ReplyError, SmtpConnection, type Reply } from './smtp-connection.js';

// run-probes.ts takes sendHugeMessage from here.
export { sendHugeMessage } from './huge-message.js';

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
