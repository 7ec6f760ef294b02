// The SMTP front door, built on smtp-server: one listener per configured address (IPv4 and
// IPv6), relay control by trusted_networks or AUTH, and the receive path into a MessageSink.
// Listener kinds: 'mx' (port 25: AUTH optional), 'submission' (587: STARTTLS, AUTH required)
// and 'smtps' (465: implicit TLS, AUTH required).

import type { Duplex } from 'node:stream';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { NetworkList, plainAddress } from '../config/cidr.js';
import type { Config, ListenAddress } from '../config/schema.js';
import { log } from '../log/log.js';
import { domainOf, isValidEnvelopeAddress, qualify } from '../message/address.js';
import { AUTH_METHODS, clearAuthAllowed, createAuthHandler } from './auth.js';
import { applySmtpServerPatches } from './patches.js';
import { receiveMessage, type MessageSink } from './receive.js';
import { replies } from './replies.js';
import { fromAddresses, ownsAddress, sendersOf } from './sender-control.js';
import { loadTlsCredentials, type TlsCredentials } from './tls.js';
import type { UsersStore } from './users-file.js';

export type ListenerKind = 'mx' | 'submission' | 'smtps';

export interface SmtpFrontDeps {
  config: Config;
  sink: MessageSink;
  /** Label recorded with each message ('smtp', 'sendmail-bs', …). */
  via: string;
  /** Every client may relay (a local user on stdin, `sendmail -bs`). */
  trustAll?: boolean;
  /** Our own domains (local and virtual); defaults to [local] domains. */
  isLocal?(address: string): boolean;
  /** RCPT-time verdict for local recipients: an SmtpError refuses, null accepts. */
  checkRecipient?(address: string): Promise<Error | null>;
  /** AUTH users; without it AUTH is not offered. */
  users?: UsersStore;
}

export class SmtpFront {
  private readonly trusted: NetworkList;
  private readonly localDomains: Set<string>;
  private readonly servers: SMTPServer[] = [];
  private tls: TlsCredentials | null | undefined;

  constructor(private readonly deps: SmtpFrontDeps) {
    applySmtpServerPatches();
    this.trusted = new NetworkList(deps.config.smtp.trustedNetworks);
    this.localDomains = new Set(deps.config.local.domains);
  }

  isTrusted(address: string): boolean {
    return this.deps.trustAll === true || this.trusted.contains(address);
  }

  private options(kind: ListenerKind = 'mx', listenHost = ''): SMTPServerOptions & {
    isTrustedAddress: (a: string) => boolean;
    refuseAuth: (secure: boolean) => Error | null;
  } {
    const { config, users } = this.deps;
    // A stream session (inetd, `sendmail -bs`) has no listener and never does TLS.
    const tls = listenHost ? (this.tls ?? null) : null;
    const clearAuth = clearAuthAllowed(listenHost, config.smtp.allowPlainAuthOnLocalhost);
    const disabled = ['WIZ', 'SHELL', 'KILL'];
    if (!tls) disabled.push('STARTTLS');
    if (!users) disabled.push('AUTH');
    return {
      secure: kind === 'smtps',
      ...(tls ? { key: tls.key, cert: tls.cert } : {}),
      hideSTARTTLS: !tls,
      authMethods: AUTH_METHODS,
      // refuseAuth (patches.ts) is the real guard; smtp-server's own only gets in its way.
      allowInsecureAuth: clearAuth,
      refuseAuth: (secure) => (secure || clearAuth ? null : replies.encryptionRequired()),
      ...(users ? { onAuth: createAuthHandler(users) } : {}),
      name: config.hostname,
      banner: 'tidemail',
      size: config.smtp.maxMessageSize,
      hideSize: false,
      hidePIPELINING: false,
      hide8BITMIME: false,
      hideSMTPUTF8: false,
      hideENHANCEDSTATUSCODES: false,
      // The sendmail wizard jokes never. AUTH is optional here: submission listeners require it
      // in onMailFrom, so the reply is ours (530 5.7.0) and AUTH-less listeners stay usable.
      disabledCommands: disabled,
      authOptional: true,
      // Reverse DNS would stall greetings on an offline box; the address is in the trace header.
      disableReverseLookup: true,
      logger: false,
      maxClients: config.smtp.maxClients,
      socketTimeout: config.smtp.commandTimeoutMs,
      closeTimeout: 30_000,
      isTrustedAddress: (a: string) => this.isTrusted(a),
      // Synchronous on purpose: smtp-server's default defers with setImmediate, and a trusted
      // client greeted at once (patches.ts) whose first command is read in that gap would get
      // "421 You talk too soon".
      onConnect: (_session, cb) => cb(),
      onMailFrom: (address, session, cb) => {
        const sender = address.address;
        if (kind !== 'mx' && !session.user) return cb(replies.authRequired());
        if (sender && !isValidEnvelopeAddress(qualify(sender, config.hostname))) return cb(replies.badSender(sender));
        const user = authUser(session);
        if (user && sender && !ownsAddress(sendersOf(user, config), qualify(sender, config.hostname))) {
          log.info(null, 'sender refused', { user, from: `<${sender}>`, client: session.remoteAddress });
          return cb(replies.senderNotOwned(sender, user));
        }
        cb();
      },
      onRcptTo: (address, session, cb) => {
        const rcpt = qualify(address.address, config.hostname);
        if (!isValidEnvelopeAddress(rcpt)) return cb(replies.badRecipient(address.address));
        if (session.envelope.rcptTo.length >= config.smtp.maxRecipients) return cb(replies.tooManyRecipients(config.smtp.maxRecipients));
        const local = this.deps.isLocal ? this.deps.isLocal(rcpt) : this.localDomains.has(domainOf(rcpt));
        if (!local && !this.isTrusted(session.remoteAddress) && !session.user) {
          log.info(null, 'relay denied', { client: session.remoteAddress, rcpt: `<${rcpt}>` });
          return cb(replies.relayDenied(rcpt));
        }
        if (!local || !this.deps.checkRecipient) return cb();
        this.deps.checkRecipient(rcpt).then(
          (err) => {
            if (err) log.info(null, 'recipient refused', { client: session.remoteAddress, rcpt: `<${rcpt}>`, reason: err.message });
            cb(err ?? undefined);
          },
          (err: Error) => cb(replies.lookupFailed(rcpt, err.message)),
        );
      },
      onData: (stream, session, cb) => {
        this.receive(stream, session).then((reply) => cb(null, reply), (err: Error) => cb(err));
      },
    };
  }

  private receive(stream: NodeJS.ReadableStream, session: SMTPServerSession): Promise<string> {
    const { config } = this.deps;
    const recipients = session.envelope.rcptTo.map((r) => qualify(r.address, config.hostname));
    const sender = session.envelope.mailFrom ? qualify(session.envelope.mailFrom.address, config.hostname) : '';
    const client = plainAddress(session.remoteAddress);
    const protocol = (session.transmissionType || 'ESMTP').replace(/^SMTP$/, 'SMTP');
    return receiveMessage(
      stream as never,
      this.deps.sink,
      { sender, recipients, via: this.deps.via, client, helo: session.hostNameAppearsAs },
      { helo: session.hostNameAppearsAs, clientAddress: client, protocol, hostname: config.hostname, recipients },
      config.smtp.maxMessageSize,
      this.headerCheck(session),
    );
  }

  /** An authenticated user's From: must be theirs too (checked on the buffered header section). */
  private headerCheck(session: SMTPServerSession): ((header: string) => Error | null) | undefined {
    const user = authUser(session);
    if (!user) return undefined;
    const owned = sendersOf(user, this.deps.config);
    return (header) => {
      const from = fromAddresses(header);
      if (!from) return replies.fromUnparsable(user);
      const bad = from.map((a) => qualify(a, this.deps.config.hostname)).find((a) => !ownsAddress(owned, a));
      if (bad === undefined) return null;
      log.info(null, 'From: refused', { user, from: `<${bad}>`, client: session.remoteAddress });
      return replies.fromNotOwned(bad, user);
    };
  }

  /** Starts one listener per address; rejects with a clear message when a bind fails. */
  async listen(addresses: readonly ListenAddress[], kind: ListenerKind = 'mx'): Promise<void> {
    // Read as root, before privileges are dropped; STARTTLS is offered wherever a cert exists.
    if (this.tls === undefined) this.tls = loadTlsCredentials(this.deps.config);
    for (const a of addresses) {
      const server = new SMTPServer(this.options(kind, a.host));
      server.on('error', (err) => log.warn(null, 'smtp error', { error: err.message }));
      await new Promise<void>((resolve, reject) => {
        const onError = (err: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${fmt(a)}: ${err.code ?? err.message}`));
        server.server.once('error', onError);
        server.listen(a.port, a.host, () => {
          server.server.off('error', onError);
          resolve();
        });
      });
      this.servers.push(server);
    }
  }

  /** Serves one session on an existing stream (inetd, `sendmail -bs`). Resolves when it ends. */
  serveStream(stream: Duplex, remoteAddress: string): Promise<void> {
    const server = new SMTPServer(this.options());
    return new Promise((resolve) => {
      stream.once('close', () => resolve());
      stream.once('end', () => resolve());
      (server as unknown as { connect(s: Duplex, o: object): void }).connect(stream, { remoteAddress, remotePort: 0 });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

function authUser(session: SMTPServerSession): string | null {
  const u = session.user as unknown;
  return typeof u === 'string' && u ? u : null;
}

export function fmt(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
