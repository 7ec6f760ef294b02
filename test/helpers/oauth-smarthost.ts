// A smarthost that takes OAuth2 logins: smtp-server with AUTH XOAUTH2, which it implements,
// and OAUTHBEARER (RFC 7628), which it does not — we add that mechanism to smtp-server's
// table of SASL handlers (`smtp-server/lib/sasl.js`, looked up as SASL_<NAME> per AUTH), so
// both run through the same real server, onAuth and session code.

import { SMTPServer } from 'smtp-server';
import sasl from 'smtp-server/lib/sasl.js';
import { waitFor } from './ports.js';
import type { ReceivedMessage } from './smarthost.js';

export interface AuthAttempt {
  /** smtp-server's session id: equal ids mean the same connection. */
  session: string;
  method: string;
  user: string;
  token: string;
  accepted: boolean;
}

export interface OAuthSmarthostOptions {
  /** Decides whether an access token is good; default: any token for any user. */
  accept?: (token: string, user: string, method: string) => boolean;
  /** Text of a 535 for a refused token instead of the 334 + JSON challenge (a server that echoes what it got). */
  refusal?: (token: string, user: string, method: string) => string;
}

export interface OAuthSmarthost {
  port: number;
  messages: ReceivedMessage[];
  auths: AuthAttempt[];
  connections: number;
  waitForMessages(n: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

// The parts of smtp-server's connection that a SASL handler uses (its own handlers use the same).
interface SaslConnection {
  send(code: number, text?: string): void;
  _nextHandler: ((data: Buffer | string, done: () => void) => void) | false;
  _server: {
    onAuth(auth: { method: string; username: string; accessToken: string }, session: unknown, cb: (err: (Error & { responseCode?: number }) | null | undefined, res?: { user?: unknown }) => void): void;
  };
  session: { user?: unknown; transmissionType?: string };
  _transmissionType(): string;
}

function oauthBearerToken(this: SaslConnection, raw: string, done: () => void): void {
  // RFC 7628 3.1: "n,a=user," ^A "host=…" ^A "port=…" ^A "auth=Bearer token" ^A ^A
  const [gs2 = '', ...pairs] = Buffer.from(raw.trim(), 'base64').toString('utf8').split('\x01');
  const user = /^n,a=([^,]*),$/.exec(gs2)?.[1]?.replace(/=2C/g, ',').replace(/=3D/g, '=');
  const fields = new Map(pairs.filter(Boolean).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)] as const));
  const token = /^Bearer (.+)$/.exec(fields.get('auth') ?? '')?.[1];
  if (!user || !token) {
    this.send(501, 'Error: invalid OAUTHBEARER client response');
    return done();
  }
  this._server.onAuth({ method: 'OAUTHBEARER', username: user, accessToken: token }, this.session, (err, res) => {
    if (err) {
      this.send(err.responseCode ?? 535, err.message);
      return done();
    }
    if (!res?.user) {
      // RFC 7628 3.2.2: the error is a challenge; the client must answer ^A, then gets the failure.
      this._nextHandler = (_d, next) => {
        this.send(535, '5.7.8 Authentication credentials invalid');
        next();
      };
      this.send(334, Buffer.from(JSON.stringify({ status: 'invalid_token', schemes: 'bearer', scope: 'smtp' })).toString('base64'));
      return done();
    }
    this.session.user = res.user;
    this.session.transmissionType = this._transmissionType();
    this.send(235, '2.7.0 Authentication successful');
    done();
  });
}

(sasl as unknown as Record<string, unknown>).SASL_OAUTHBEARER = function (this: SaslConnection, args: string[], done: () => void): void {
  if (args.length > 1) {
    this.send(501, 'Error: syntax: AUTH OAUTHBEARER initial-response');
    return done();
  }
  if (!args.length) {
    this._nextHandler = (d, next) => oauthBearerToken.call(this, d.toString(), next);
    this.send(334);
    return done();
  }
  oauthBearerToken.call(this, args[0]!, done);
};

export async function startOAuthSmarthost(opts: OAuthSmarthostOptions = {}): Promise<OAuthSmarthost> {
  const accept = opts.accept ?? (() => true);
  const state = { connections: 0 };
  const messages: ReceivedMessage[] = [];
  const auths: AuthAttempt[] = [];
  const server = new SMTPServer({
    logger: false,
    authMethods: ['XOAUTH2', 'OAUTHBEARER'],
    disabledCommands: ['STARTTLS'],
    allowInsecureAuth: true,
    disableReverseLookup: true,
    onConnect: (_s, cb) => {
      state.connections++;
      cb();
    },
    onAuth: (auth, session, cb) => {
      const token = auth.accessToken ?? '';
      const ok = accept(token, auth.username ?? '', auth.method);
      auths.push({ session: session.id, method: auth.method, user: auth.username ?? '', token, accepted: ok });
      // A refused token gets the 334 + JSON error challenge (smtp-server's XOAUTH2 does that
      // for a result without `user`), as Gmail and Microsoft 365 answer.
      if (!ok && opts.refusal) return cb(Object.assign(new Error(opts.refusal(token, auth.username ?? '', auth.method)), { responseCode: 535 }));
      cb(null, ok ? { user: auth.username } : { data: { status: '401', schemes: 'bearer', scope: 'https://mail.google.com/' } } as never);
    },
    onData: (stream, session, cb) => {
      const parts: Buffer[] = [];
      stream.on('data', (d: Buffer) => parts.push(d));
      stream.on('end', () => {
        messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((x) => x.address),
          raw: Buffer.concat(parts),
          user: session.user as string | undefined,
          secure: session.secure,
        });
        cb();
      });
    },
  });
  server.on('error', () => undefined);
  const port = await new Promise<number>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.server.address() as { port: number }).port));
  });
  return {
    port,
    messages,
    auths,
    get connections() {
      return state.connections;
    },
    waitForMessages: (n, timeoutMs = 10_000) => waitFor(`${n} message(s) at the smarthost`, () => (messages.length >= n ? messages : null), timeoutMs),
    close: () => new Promise((r) => server.close(() => r())),
  };
}
