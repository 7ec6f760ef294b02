// A real SMTP server (smtp-server) standing in for the user's smarthost. It records every
// message byte-for-byte and can be told to refuse, defer, require AUTH or speak TLS.

import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { testCerts } from './certs.js';
import { waitFor } from './ports.js';

export interface ReceivedMessage {
  from: string;
  to: string[];
  raw: Buffer;
  user?: string;
  secure: boolean;
}

export interface SmarthostOptions {
  port?: number;
  host?: string;
  tls?: 'none' | 'starttls' | 'implicit';
  auth?: { user: string; pass: string };
  /** The SASL mechanisms offered (smtp-server's default: PLAIN, LOGIN). */
  authMethods?: string[];
  /** Text of the 535 refusing a login (a server that echoes what it got); the login is refused whatever the password. */
  authReply?: (login: { method: string; username: string; password: string }) => string;
  /** Answer AUTH only after this many ms (a server that checks passwords slowly). */
  authDelayMs?: number;
  /** Return an error reply ("550 5.1.1 no such user") to refuse this recipient. */
  rcptReply?: (address: string) => string | null;
  /** Return an error reply to refuse at end of DATA. */
  dataReply?: (raw: Buffer) => string | null;
  /** Runs when a message has been received, before the reply (e.g. to fill the client's disk then). */
  onMessage?: (raw: Buffer) => void;
  /** True: never answer this MAIL FROM (a session hanging on a dead or stalled link). */
  stallMail?: (sender: string) => boolean;
  /** True: record the message but never answer its end of DATA (the reply lost on the way). */
  stallData?: (raw: Buffer) => boolean;
  /** Stop reading the message data of this (0-based) message for the returned ms (its TCP window fills). */
  pauseRead?: (index: number) => number;
  /** Answer the end of DATA only after this many ms (the message is recorded at once). */
  dataDelayMs?: number;
  /** Answer MAIL FROM only after this many ms (a slow but working peer). */
  mailDelayMs?: number;
  /** Greet the n-th (1-based) connection only after the returned ms (a lost greeting, a greet pause). */
  greetDelayMs?: (connection: number) => number;
  /** Called when a reply is withheld. */
  onStall?: (what: 'mail' | 'data' | 'read') => void;
}

export interface Smarthost {
  port: number;
  messages: ReceivedMessage[];
  /** TCP connections accepted so far. */
  connections: number;
  /** Connections greeted so far (after greetDelayMs). */
  greeted: number;
  /** Connections closed so far (either side). */
  closed: number;
  waitForMessages(n: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  close(): Promise<void>;
}

function smtpError(reply: string): Error {
  const m = /^(\d{3})\s+(.*)$/.exec(reply);
  return Object.assign(new Error(m ? m[2] : reply), { responseCode: m ? Number(m[1]) : 550 });
}

export async function startSmarthost(opts: SmarthostOptions = {}): Promise<Smarthost> {
  const messages: ReceivedMessage[] = [];
  const tls = opts.tls ?? 'none';
  const certs = tls === 'none' ? null : testCerts();
  const state = { connections: 0, greeted: 0, closed: 0 };
  let dataCount = 0;
  const options: SMTPServerOptions = {
    logger: false,
    secure: tls === 'implicit',
    key: certs?.key,
    cert: certs?.cert,
    disabledCommands: [...(tls === 'none' ? ['STARTTLS'] : []), ...(opts.auth ? [] : ['AUTH'])],
    authOptional: !opts.auth,
    ...(opts.authMethods ? { authMethods: opts.authMethods } : {}),
    allowInsecureAuth: true,
    disableReverseLookup: true,
    size: 200 * 1024 * 1024,
    onConnect: (_s, cb) => {
      const n = ++state.connections;
      const delay = opts.greetDelayMs?.(n) ?? 0;
      const greet = () => {
        state.greeted++;
        cb();
      };
      if (delay > 0) return void setTimeout(greet, delay).unref();
      greet();
    },
    onClose: () => {
      state.closed++;
    },
    onAuth: (auth, _s, cb) => {
      const answer = () => {
        const echo = opts.authReply?.({ method: auth.method, username: auth.username ?? '', password: auth.password ?? '' });
        if (echo !== undefined) return cb(Object.assign(new Error(echo), { responseCode: 535 }));
        if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) return cb(null, { user: auth.username });
        cb(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
      };
      if (opts.authDelayMs) return void setTimeout(answer, opts.authDelayMs).unref();
      answer();
    },
    onMailFrom: (addr, _s, cb) => {
      if (opts.stallMail?.(addr.address)) return opts.onStall?.('mail'); // no reply, ever
      if (opts.mailDelayMs) return void setTimeout(() => cb(), opts.mailDelayMs);
      cb();
    },
    onRcptTo: (addr, _s, cb) => {
      const r = opts.rcptReply?.(addr.address);
      cb(r ? smtpError(r) : undefined);
    },
    onData: (stream, session, cb) => {
      const parts: Buffer[] = [];
      const pause = opts.pauseRead?.(dataCount++) ?? 0;
      if (pause > 0) {
        stream.pause();
        opts.onStall?.('read');
        setTimeout(() => stream.on('data', (d: Buffer) => parts.push(d)), pause);
      } else stream.on('data', (d: Buffer) => parts.push(d));
      stream.on('end', () => {
        const raw = Buffer.concat(parts);
        const r = opts.dataReply?.(raw);
        if (r) return cb(smtpError(r));
        opts.onMessage?.(raw);
        messages.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
          to: session.envelope.rcptTo.map((x) => x.address),
          raw,
          user: session.user as string | undefined,
          secure: session.secure,
        });
        if (opts.stallData?.(raw)) return opts.onStall?.('data');
        if (opts.dataDelayMs) return void setTimeout(() => cb(), opts.dataDelayMs);
        cb();
      });
    },
  };
  const server = new SMTPServer(options);
  server.on('error', () => undefined);
  const port = await new Promise<number>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve((server.server.address() as { port: number }).port));
  });
  return {
    port,
    messages,
    get connections() {
      return state.connections;
    },
    get greeted() {
      return state.greeted;
    },
    get closed() {
      return state.closed;
    },
    waitForMessages: (n, timeoutMs = 10_000) => waitFor(`${n} message(s) at the smarthost`, () => (messages.length >= n ? messages : null), timeoutMs),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Route file text for a smarthost helper. */
export function smarthostRoute(port: number, extra = ''): string {
  return `smarthost = "127.0.0.1:${port}"\ntls = "none"\n${extra}\n`;
}
