// Two small adjustments to smtp-server's connection class, applied once:
//
// 1. Enhanced status codes: smtp-server adds a generic enhanced code derived from the basic code
//    to every reply. Our refusals carry a precise one as the first word of their text
//    ("5.7.1 Relay access denied"); for those, skip the generic one so it is not doubled.
// 2. Greeting delay: smtp-server waits 100 ms before the greeting to catch early talkers. That
//    is useful against spam bots on the Internet and pointless (and slow) for trusted clients
//    such as cron's sendmail or LAN devices, so trusted addresses are greeted at once.
// 3. AUTH in clear: smtp-server's own guard only works while STARTTLS is offered and answers
//    with a generic 5.7.0. Our `refuseAuth` option decides per connection; when it refuses, AUTH
//    is left out of the EHLO reply and the command gets its reply (538 5.7.11, RFC 4954 §6).

import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const ENHANCED = /^[245]\.\d{1,3}\.\d{1,3} /;
let applied = false;

interface PatchedConnection {
  _server: {
    options: { maxClients?: number; isTrustedAddress?: (a: string) => boolean; refuseAuth?: (secure: boolean) => Error | null };
    connections: Set<unknown>;
  };
  remoteAddress: string;
  secure: boolean;
  handler_AUTH(command: unknown, callback: () => void): void;
  _setListeners(cb: () => void): void;
  connectionReady(): void;
  send(code: number, data: unknown, context?: unknown): void;
}

export function applySmtpServerPatches(): void {
  if (applied) return;
  applied = true;
  const proto = SMTPConnection.prototype as unknown as PatchedConnection & { init(): void };
  const send = proto.send;
  proto.send = function (this: PatchedConnection, code, data, context) {
    if (typeof data === 'string' && ENHANCED.test(data)) context = false;
    if (code === 250 && Array.isArray(data) && this._server.options.refuseAuth?.(this.secure)) {
      data = data.filter((l: unknown) => !(typeof l === 'string' && /^AUTH /.test(l)));
    }
    return send.call(this, code, data, context);
  };
  const handleAuth = proto.handler_AUTH;
  proto.handler_AUTH = function (this: PatchedConnection, command, callback) {
    const refusal = this._server.options.refuseAuth?.(this.secure);
    if (!refusal) return handleAuth.call(this, command, callback);
    this.send((refusal as { responseCode?: number }).responseCode ?? 538, refusal.message);
    callback();
  };
  const init = proto.init;
  proto.init = function (this: PatchedConnection) {
    const trusted = this._server.options.isTrustedAddress;
    if (!trusted || !trusted(this.remoteAddress)) return init.call(this as never);
    this._setListeners(() => {
      const max = this._server.options.maxClients;
      if (max && this._server.connections.size > max) {
        return this.send(421, 'Too many connected clients, try again in a moment', false);
      }
      this.connectionReady();
    });
  };
}
