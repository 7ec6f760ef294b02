// Deadlines for the replies of an SMTP/LMTP server, on top of nodemailer's SMTPConnection.
// nodemailer bounds the TCP connect, the greeting and the TLS handshake, but after that only
// by socket inactivity — which every byte resets, so a server dripping one byte every 10 s
// held a delivery for 20+ minutes. Here each reply we wait for has its own deadline, counted
// from when we start waiting for it (Postfix's smtp_*_timeout), and the whole delivery one more.
// On expiry the socket is destroyed and the command in flight fails with a clear message;
// the caller turns that into a tempfail.
//
// It hooks four of SMTPConnection's internal methods on the one instance (checked against
// nodemailer 10.6): _sendCommand (a command was written: a reply is owed), _createSendStream
// (the message: one reply per recipient for LMTP, owed once the final "." is written),
// _processResponse (a complete reply is about to be consumed) and _onData (bytes arrived, only
// to tell "drip-fed" from "silent" in the message).

import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { SmtpDeadlines } from '../routes/profile.js';
import { checkMembers } from '../deps/pinned.js';

type ReplyKind = 'greeting' | 'helo' | 'mail' | 'rcpt' | 'data' | 'dataDone';

const LIMIT: Record<ReplyKind, { key: keyof SmtpDeadlines; option: string }> = {
  greeting: { key: 'greetingMs', option: 'greeting_timeout' },
  helo: { key: 'heloMs', option: 'helo_timeout' },
  mail: { key: 'mailMs', option: 'mail_timeout' },
  rcpt: { key: 'rcptMs', option: 'rcpt_timeout' },
  data: { key: 'dataMs', option: 'data_timeout' },
  dataDone: { key: 'dataDoneMs', option: 'data_done_timeout' },
};

interface Owed {
  kind: ReplyKind;
  /** The command, without its arguments (they may hold a password or an address). */
  what: string;
  /** The end-of-data reply is owed only once the final "." has been written. */
  armed: boolean;
}

/** What nodemailer keeps inside; only what the hooks touch. */
interface Internals {
  _socket?: { destroy(): void; destroyed?: boolean };
  _destroyed?: boolean;
  _responseQueue: unknown[];
  _envelope?: { accepted?: string[] };
  _sendCommand(str: string, logStr?: string): void;
  _createSendStream(cb: unknown): NodeJS.EventEmitter;
  _processResponse(): unknown;
  _onData(chunk: Buffer): unknown;
  _onConnect(): unknown;
  _onError(err: Error, type: string, data: unknown, command: string): void;
}

export const DEADLINE_CODE = 'EDEADLINE';
/** Queued lines beyond the replies owed (blank lines, which answer nothing) before a cut. */
const MAX_STRAY_LINES = 100;
/** No byte of a reply a healthy server sends at once, for stall_timeout (see StallHedge). */
export const HEDGE_CODE = 'EHEDGE';
/** The progress watchdog cut a connection on which nothing got through (progress-watchdog.ts). */
export const STALL_CODE = 'ESTALL';

/**
 * On a lossy link a lost reply costs TCP's back-off, which after a retransmitted SYN starts at
 * 3 s and doubles: one lost greeting or MAIL reply can hold a session for 10-20 s, longer than
 * many up-windows of a flapping LTE link. The replies that come at once from a healthy server
 * (greeting, EHLO/HELO, STARTTLS, MAIL, RCPT, DATA — all before the end of the data, so the
 * server has not taken the message) get this shorter limit; on expiry with nothing received
 * the connection is cut (HEDGE_CODE) and the caller tries once more on a new connection.
 */
export interface StallHedge {
  ms: number;
}

/** Told how long each reply StallHedge covers took to begin (ms), hedged or not. */
export type ReplyLatency = (ms: number) => void;

const HEDGED: ReadonlySet<string> = new Set(['the connection (greeting)', 'EHLO', 'HELO', 'STARTTLS', 'MAIL FROM', 'RCPT TO', 'DATA']);

/** The hooked members were found once (deps/pinned.ts); the daemon checked the version at start. */
let checked = false;

export class ReplyDeadlines {
  private readonly owed: Owed[] = [{ kind: 'greeting', what: 'the connection (greeting)', armed: false }];
  private timer: NodeJS.Timeout | undefined;
  private totalTimer: NodeJS.Timeout | undefined;
  private connectTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  /** Bytes received since the head reply's clock started. */
  private bytes = 0;
  /** When the head reply's clock started. */
  private headSince = 0;
  /**
   * The longest wait for the first byte of a reply StallHedge covers: a server that is simply
   * slow to answer shows here, and is then not hedged (SmtpTransport.slowHosts).
   */
  longestSilenceMs = 0;
  private readonly c: Internals;

  /**
   * @param peer how messages name the server: "smarthost smtp.example.net:587"
   * @param connectMs the TCP (or tunnel) connection, until nodemailer says it is up
   */
  constructor(conn: SMTPConnection, private readonly limits: SmtpDeadlines, private readonly peer: string, connectMs: number, lmtp = false, private hedge?: StallHedge, private readonly latency?: ReplyLatency) {
    const c = (this.c = conn as unknown as Internals);
    if (!checked) {
      checkMembers('nodemailer', 'SMTPConnection', c, ['_sendCommand', '_createSendStream', '_processResponse', '_onData', '_onConnect', '_onError']);
      checked = true;
    }
    const self = this;
    const { _sendCommand, _createSendStream, _processResponse, _onData, _onConnect } = c;
    c._sendCommand = function (str, logStr) {
      if (!this._destroyed) self.push(commandKind(str));
      return _sendCommand.call(this, str, logStr);
    };
    c._createSendStream = function (cb) {
      const stream = _createSendStream.call(this, cb);
      const replies = lmtp ? Math.max(1, this._envelope?.accepted?.length ?? 1) : 1;
      const entries: Owed[] = Array.from({ length: replies }, () => ({ kind: 'dataDone', what: 'the end of the message data', armed: false }));
      for (const e of entries) self.push(e);
      stream.once('end', () => {
        for (const e of entries) e.armed = true;
        self.restart();
      });
      return stream;
    };
    c._processResponse = function () {
      const head = this._responseQueue[0];
      if (head !== undefined) {
        const s = String(head);
        // The same test nodemailer applies: blank lines and unfinished replies consume nothing.
        if (s.trim() && !/^\d+-/.test(s.slice(s.lastIndexOf('\n') + 1))) self.replied();
      }
      return _processResponse.call(this);
    };
    c._onData = function (chunk) {
      if (!self.bytes && self.headSince && self.owed[0]?.armed && HEDGED.has(self.owed[0].what)) {
        const waited = Date.now() - self.headSince;
        self.longestSilenceMs = Math.max(self.longestSilenceMs, waited);
        clearTimeout(self.stallTimer);
        self.latency?.(waited);
      }
      self.bytes += chunk?.length ?? 0;
      const r = _onData.call(this, chunk);
      // nodemailer caps one reply (1 MiB) but not blank lines: it queues them and skips one per
      // turn of the loop. A server sending only CRLFs grew the daemon by 100 MB a minute at half
      // a CPU, until helo_timeout (300 s). More lines queued than replies owed is such a flood.
      const stray = this._responseQueue.length - self.owed.length;
      if (stray > MAX_STRAY_LINES && !this._destroyed) self.fail(`${peer} sent ${stray} lines that answer nothing (blank lines?); connection cut`, 'EPROTOCOL');
      return r;
    };
    c._onConnect = function () {
      clearTimeout(self.connectTimer);
      const r = _onConnect.call(this);
      self.owed[0]!.armed = self.owed[0]!.kind === 'greeting' || self.owed[0]!.armed;
      self.restart();
      return r;
    };
    this.connectTimer = unref(setTimeout(() => this.fail(`${peer}: no connection within ${seconds(connectMs)} s (connect_timeout)`), connectMs));
    conn.once('end', () => this.stop());
  }

  /** Bounds one delivery: from now (or an earlier start, as an absolute time) to its last reply. */
  startTransaction(deadlineAt: number): void {
    clearTimeout(this.totalTimer);
    const ms = this.limits.transactionMs;
    this.totalTimer = unref(setTimeout(
      () => this.fail(`${this.peer} did not complete the delivery within ${seconds(ms)} s (transaction_timeout): it is too slow or drip-feeds its replies`),
      Math.max(0, deadlineAt - Date.now()),
    ));
  }

  endTransaction(): void {
    clearTimeout(this.totalTimer);
    this.totalTimer = undefined;
  }

  /** No more StallHedge on this connection (the retry after a hedge, a host known to be slow). */
  noHedge(): void {
    this.hedge = undefined;
    clearTimeout(this.stallTimer);
  }

  stop(): void {
    clearTimeout(this.stallTimer);
    clearTimeout(this.timer);
    clearTimeout(this.totalTimer);
    clearTimeout(this.connectTimer);
  }

  private push(e: Owed): void {
    this.owed.push(e);
    if (this.owed.length === 1) this.restart();
  }

  private replied(): void {
    this.owed.shift();
    this.restart();
  }

  /** (Re)starts the clock for the reply at the head of the queue, if it is owed yet. */
  private restart(): void {
    clearTimeout(this.timer);
    clearTimeout(this.stallTimer);
    this.timer = undefined;
    this.bytes = 0;
    this.headSince = 0;
    const head = this.owed[0];
    if (!head?.armed || this.c._destroyed) return;
    this.headSince = Date.now();
    const hedge = this.hedge;
    if (hedge && HEDGED.has(head.what)) {
      this.stallTimer = unref(setTimeout(() => {
        if (!this.bytes) this.fail(`${this.peer} sent nothing in reply to ${head.what} for ${seconds(hedge.ms)} s (stall_timeout)`, HEDGE_CODE);
      }, hedge.ms));
    }
    const { key, option } = LIMIT[head.kind];
    const ms = this.limits[key];
    this.timer = unref(setTimeout(() => {
      this.fail(this.bytes
        ? `${this.peer} drip-fed its reply to ${head.what}: no full reply within ${seconds(ms)} s (${option})`
        : `${this.peer} sent no reply to ${head.what} within ${seconds(ms)} s (${option})`);
    }, ms));
  }

  /** Fails the command in flight (nodemailer's own error path) and drops the connection. */
  fail(text: string, code = DEADLINE_CODE): void {
    this.stop();
    if (this.c._destroyed) return;
    const socket = this.c._socket;
    this.c._onError(Object.assign(new Error(text), { code }), code, false, 'CONN');
    // close() ends politely and waits for the peer; this peer is the problem, so cut it off.
    if (socket && !socket.destroyed) socket.destroy();
  }
}

function commandKind(str: string): Owed {
  const verb = /^\s*([A-Za-z]+)/.exec(str)?.[1]?.toUpperCase() ?? '';
  switch (verb) {
    case 'MAIL':
      return { kind: 'mail', what: 'MAIL FROM', armed: true };
    case 'RCPT':
      return { kind: 'rcpt', what: 'RCPT TO', armed: true };
    case 'DATA':
      return { kind: 'data', what: 'DATA', armed: true };
    case 'EHLO': case 'HELO': case 'LHLO': case 'STARTTLS': case 'AUTH': case 'RSET': case 'QUIT': case 'NOOP':
      return { kind: 'helo', what: verb, armed: true };
    default:
      return { kind: 'helo', what: 'AUTH', armed: true }; // the continuation lines of a login
  }
}

/** A deadline never keeps a process alive by itself (the socket does, while it is open). */
function unref(t: NodeJS.Timeout): NodeJS.Timeout {
  t.unref();
  return t;
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1);
}
