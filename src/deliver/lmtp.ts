// LMTP delivery (RFC 2033) to a local store such as Dovecot, over a unix socket or TCP, with
// nodemailer's SMTPConnection in LMTP mode. One transaction carries the message for every
// recipient; after the data the server answers once per accepted recipient, so each recipient
// gets its own result. The store adds Return-Path and Delivered-To itself.

import net from 'node:net';
import type { Readable } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { DEFAULT_DEADLINES, type SmtpDeadlines } from '../routes/profile.js';
import { ReplyDeadlines } from './smtp-deadline.js';
import type { DeliveryResult, SmtpErrorLike } from './transport.js';

export interface LmtpTarget {
  /** A unix socket path (Dovecot: /var/run/dovecot/lmtp). */
  socket?: string;
  host?: string;
  /** 24 when not given (RFC 2033 4: LMTP must not use port 25). */
  port?: number;
}


const CONNECT_TIMEOUT_MS = 30_000;
const SOCKET_TIMEOUT_MS = 5 * 60_000;

/**
 * Delivers `body` to `recipients` (each as given, the map's keys) in one LMTP transaction.
 * @returns per recipient: ok for a 2xx after the data; permfail for a 5xx (to RCPT TO or after
 * the data); tempfail for a 4xx, and for everyone when the connection fails or breaks before
 * the server has answered — a recipient whose reply was lost may then get a second copy, which
 * beats losing the message.
 */
export async function deliverLmtp(
  target: LmtpTarget,
  body: () => Readable,
  sender: string,
  recipients: string[],
  lhloName: string,
  // A local store is no more trusted to answer in time than a smarthost (Postfix lmtp_*_timeout).
  limits: SmtpDeadlines = DEFAULT_DEADLINES,
): Promise<Map<string, DeliveryResult>> {
  const label = target.socket ?? `${target.host ?? 'localhost'}:${target.port ?? 24}`;
  const unique = [...new Set(recipients)];
  const all = (r: DeliveryResult) => new Map(unique.map((rcpt) => [rcpt, r]));
  if (!unique.length) return new Map();

  let socket: net.Socket | undefined;
  if (target.socket) {
    try {
      socket = await connectUnix(target.socket);
    } catch (err) {
      return all({ outcome: 'tempfail', message: `4.4.1 cannot connect to LMTP ${label}: ${(err as Error).message}`, remote: label });
    }
  }
  // Loaded on first use, as in smtp.ts: the daemon does not carry the client while idle.
  const { default: SMTPConnectionClass } = await import('nodemailer/lib/smtp-connection/index.js');
  const conn = new SMTPConnectionClass({
    lmtp: true,
    host: target.host ?? 'localhost',
    port: target.port ?? 24,
    connection: socket,
    ignoreTLS: true, // a local store on loopback or a socket; nothing to protect in transit
    name: lhloName,
    // Backstops only: ReplyDeadlines fires first, with a clear message.
    connectionTimeout: CONNECT_TIMEOUT_MS + limits.greetingMs + 1000,
    greetingTimeout: limits.greetingMs + 1000,
    socketTimeout: SOCKET_TIMEOUT_MS,
    logger: false,
  } as SMTPConnection.Options);
  // Errors also arrive through connect() and send(); later ones (after QUIT) are of no interest.
  conn.on('error', () => undefined);
  const deadlines = new ReplyDeadlines(conn, limits, `LMTP server ${label}`, CONNECT_TIMEOUT_MS, true);
  deadlines.startTransaction(Date.now() + limits.transactionMs);

  try {
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.once('end', () => reject(new Error('connection closed by the server')));
      conn.connect(() => resolve());
    });
  } catch (err) {
    conn.close();
    return all({ outcome: 'tempfail', message: `4.4.1 cannot connect to LMTP ${label}: ${describe(err as SmtpErrorLike)}`, remote: label });
  }

  let failed = false;
  const results = await new Promise<Map<string, DeliveryResult>>((resolve) => {
    const stream = body();
    const envelope = { from: sender, to: unique, use8BitMime: true };
    conn.send(envelope as never, stream, (err: SmtpErrorLike | null, info?: { rejectedErrors?: SmtpErrorLike[] }) => {
      deadlines.endTransaction();
      stream.destroy();
      failed = !!err;
      const out = new Map<string, DeliveryResult>();
      const rejected = new Map((err ? err.rejectedErrors : info?.rejectedErrors)?.map((e) => [e.recipient, e]) ?? []);
      for (const rcpt of unique) {
        const e = rejected.get(rcpt);
        if (e) out.set(rcpt, resultOf(e, label));
        else if (err) out.set(rcpt, resultOf(err, label));
        else out.set(rcpt, { outcome: 'ok', message: `250 2.0.0 delivered by LMTP ${label}`, remote: label });
      }
      resolve(out);
    });
  });
  // After a failed send the session may be stuck inside DATA (a read error of the queued
  // message stops the data without its final "."): drop it, so the store discards the part
  // it got instead of reading our QUIT as message text.
  if (failed) conn.close();
  else {
    try {
      conn.quit();
    } catch {
      conn.close();
    }
  }
  return new Map(recipients.map((rcpt) => [rcpt, results.get(rcpt)!]));
}

function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path });
    const timer = setTimeout(() => s.destroy(new Error(`no connection within ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS);
    const failed = (err: Error) => {
      clearTimeout(timer);
      reject(err);
    };
    s.once('error', failed);
    s.once('connect', () => {
      clearTimeout(timer);
      // SMTPConnection adds its own handler in connect(); until then an error must not throw.
      s.removeListener('error', failed);
      s.on('error', () => undefined);
      resolve(s);
    });
  });
}

/** 5xx is permanent; 4xx, a broken connection or anything else is temporary. */
function resultOf(err: SmtpErrorLike, label: string): DeliveryResult {
  const code = err.responseCode ?? 0;
  if (!code) return { outcome: 'tempfail', message: `4.4.2 LMTP ${label}: ${describe(err)}`, remote: label };
  return { outcome: code >= 500 && code < 600 ? 'permfail' : 'tempfail', message: describe(err), remote: label };
}

function describe(err: SmtpErrorLike): string {
  return (err.response ?? err.message).replace(/\s+/g, ' ').trim();
}
