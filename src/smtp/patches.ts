// Two small adjustments to smtp-server's connection class, applied once:
//
// 1. Enhanced status codes: smtp-server adds a generic enhanced code derived from the basic code
//    to every reply. Our refusals carry a precise one as the first word of their text
//    ("5.7.1 Relay access denied"); for those, skip the generic one so it is not doubled.
// 2. Greeting delay: smtp-server waits 100 ms before the greeting to catch early talkers. That
//    is useful against spam bots on the Internet and pointless (and slow) for trusted clients
//    such as cron's sendmail or LAN devices, so trusted addresses are greeted at once.
// 4. Session limits (options below): a per-client-address connection cap, a whole-session
//    deadline (slowloris drip-feeding resets the idle timer but not this one), a cap on refused
//    commands per session (then 421), and a configurable greeting delay for untrusted clients
//    (an early talker is refused with smtp-server's "You talk too soon" 421).
// 5. Unsynchronised pipelining after DATA (RFC 2920 §3.1: DATA ends a command group; the client
//    must wait for 354): when message bytes were already waiting as the 354 was sent, the session
//    is marked and the message refused at its end.
// 3. AUTH in clear: smtp-server's own guard only works while STARTTLS is offered and answers
//    with a generic 5.7.0. Our `refuseAuth` option decides per connection; when it refuses, AUTH
//    is left out of the EHLO reply and the command gets its reply (538 5.7.11, RFC 4954 §6).

import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { checkMembers } from '../deps/pinned.js';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

/** The options our patches read from the SMTPServer options object. */
export interface SessionLimitOptions {
  maxClients?: number;
  isTrustedAddress?: (a: string) => boolean;
  refuseAuth?: (secure: boolean) => Error | null;
  /** False while there is nobody to authenticate: AUTH is then neither advertised nor accepted. */
  authAvailable?: () => boolean;
  /** Connections at once from one client address. */
  maxConnectionsPerIp?: number;
  /** Whole-session deadline in ms. */
  sessionTimeoutMs?: number;
  /** Replies ≥ 400 before the session is closed with 421. */
  maxErrors?: number;
  /** Greeting delay for untrusted clients in ms (smtp-server's own is 100 ms). */
  greetDelayMs?: number;
}

interface PatchedConnection {
  _server: { options: SessionLimitOptions; connections: Set<PatchedConnection> };
  remoteAddress: string;
  secure: boolean;
  session: { id: string; unsyncPipelining?: boolean };
  _socket: { once(ev: string, fn: () => void): void };
  _parser: { dataBytes?: number; _lastBytes?: Buffer | false } | false;
  _ready: boolean;
  _closing?: boolean;
  _closed?: boolean;
  _errorCount?: number;
  _limitClosing?: boolean;
  handler_AUTH(command: unknown, callback: () => void): void;
  handler_DATA(command: unknown, callback: () => void): void;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  send(code: number, data: unknown, context?: unknown): void;
}

export function applySmtpServerPatches(): void {
  if (applied) return;
  // Before anything is replaced: a moved member must stop us, not silently drop a limit.
  checkMembers('smtp-server', 'SMTPConnection.prototype', SMTPConnection.prototype, ['send', 'handler_DATA', 'handler_AUTH', 'init', '_setListeners', 'connectionReady']);
  applied = true;
  const proto = SMTPConnection.prototype as unknown as PatchedConnection & { init(): void };
  const send = proto.send;
  proto.send = function (this: PatchedConnection, code, data, context) {
    if (typeof data === 'string' && ENHANCED.test(data)) context = false;
    const opts = this._server.options;
    if (code === 250 && Array.isArray(data) && (opts.refuseAuth?.(this.secure) || opts.authAvailable?.() === false)) {
      data = data.filter((l: unknown) => !(typeof l === 'string' && /^AUTH /.test(l)));
    }
    send.call(this, code, data, context);
    const max = this._server.options.maxErrors;
    if (max && code >= 400 && code !== 421 && this._ready && !this._limitClosing) {
      this._errorCount = (this._errorCount ?? 0) + 1;
      if (this._errorCount >= max) {
        this._limitClosing = true;
        send.call(this, 421, `4.7.0 Too many errors in this session (${max}), closing connection`, false);
      }
    }
  };
  const handleData = proto.handler_DATA;
  proto.handler_DATA = function (this: PatchedConnection, command, callback) {
    const parser = this._parser;
    this.session.unsyncPipelining = false;
    handleData.call(this, command, callback);
    // The parser feeds whatever followed "DATA\r\n" in the same read to the message stream
    // before this tick ends: bytes there were sent before the client could have seen our 354.
    process.nextTick(() => {
      if (parser && ((parser.dataBytes ?? 0) > 0 || (parser._lastBytes && parser._lastBytes.length > 0))) {
        this.session.unsyncPipelining = true;
      }
    });
  };
  const handleAuth = proto.handler_AUTH;
  proto.handler_AUTH = function (this: PatchedConnection, command, callback) {
    if (this._server.options.authAvailable?.() === false) {
      this.send(503, '5.5.1 AUTH is not available here (no users are set up)');
      return callback();
    }
    const refusal = this._server.options.refuseAuth?.(this.secure);
    if (!refusal) return handleAuth.call(this, command, callback);
    this.send((refusal as { responseCode?: number }).responseCode ?? 538, refusal.message);
    callback();
  };
  proto.init = function (this: PatchedConnection) {
    const opts = this._server.options;
    const trusted = !!opts.isTrustedAddress?.(this.remoteAddress);
    this._setListeners(() => {
      if (opts.maxClients && this._server.connections.size > opts.maxClients) {
        return this.send(421, '4.7.0 Too many connected clients, try again in a moment', false);
      }
      if (opts.maxConnectionsPerIp && !trusted) {
        let same = 0;
        for (const c of this._server.connections) if (c.remoteAddress === this.remoteAddress) same++;
        if (same > opts.maxConnectionsPerIp) {
          return this.send(421, `4.7.0 Too many connections from your address (at most ${opts.maxConnectionsPerIp}), try again later`, false);
        }
      }
      if (opts.sessionTimeoutMs) {
        const timer = setTimeout(() => {
          if (!this._closing && !this._closed) this.send(421, '4.4.2 Session time limit exceeded, closing connection', false);
        }, opts.sessionTimeoutMs);
        timer.unref();
        this._socket.once('close', () => clearTimeout(timer));
      }
      // Trusted clients (cron's sendmail, LAN devices) are greeted at once; others wait, and
      // one that talks before the greeting is an early talker.
      const delay = trusted ? 0 : (opts.greetDelayMs ?? 100);
      if (delay === 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
}
