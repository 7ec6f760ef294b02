// The SMTP front door, built on smtp-server: one listener per configured address (IPv4 and
// IPv6), relay control by trusted_networks or AUTH, and the receive path into a MessageSink.
// Listener kinds: 'mx' (port 25: AUTH optional), 'submission' (587: STARTTLS, AUTH required)
// and 'smtps' (465: implicit TLS, AUTH required).

import type { Duplex } from 'node:stream';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { runChecks, type CheckContext, type ConnectionNotes, type Phase, type TransactionNotes, type Verdict } from '../checks/check.js';
import { createCheck as createRecipientsCheck } from '../checks/recipients.js';
import { createCheck as createRelayCheck } from '../checks/relay.js';
import { allChecks, type CheckPlan } from '../checks/registry.js';
import { NetworkList, plainAddress } from '../config/cidr.js';
import { ConfigReader } from '../config/reader.js';
import { SmtpError } from '../errors.js';
import { describeBindError, ListenError } from '../doctor/ports.js';
import type { Config, ListenAddress } from '../config/schema.js';
import { log } from '../log/log.js';
import { domainOf, isValidEnvelopeAddress, nonMailboxReason, qualify } from '../message/address.js';
import { AUTH_METHODS, clearAuthAllowed, createAuthHandler } from './auth.js';
import { applySmtpServerPatches, type SessionLimitOptions } from './patches.js';
import { submit, type IntakeSource } from '../intake/pipeline.js';
import { receivedHeader, type MessageSink } from './receive.js';
import { replies } from './replies.js';
import { fromAddresses, ownsAddress, sendersOf } from './sender-control.js';
import { loadTlsCredentials, type TlsCredentials } from './tls.js';
import type { UsersStore } from './users-file.js';

export type ListenerKind = 'mx' | 'submission' | 'smtps';

/** What one connection carries from phase to phase. */
interface SessionState {
  connection: ConnectionNotes;
  /**
   * The current transaction's notes, made at MAIL FROM. Tied to the envelope object it was made
   * for: smtp-server replaces session.envelope at RSET, HELO/EHLO, STARTTLS and after DATA, so
   * notes can never outlive their transaction even when no new MAIL comes.
   */
  transaction?: { envelope: object; notes: TransactionNotes };
  messages: number;
  /** The HELO name whose helo-phase checks passed (they run at the first MAIL after it). */
  heloChecked?: string;
}

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
  /** The in-session checks ([checks]); without a plan only the relay check runs. */
  checks?: CheckPlan;
}

export class SmtpFront {
  private readonly trusted: NetworkList;
  private readonly localDomains: Set<string>;
  private readonly servers: SMTPServer[] = [];
  private tls: TlsCredentials | null | undefined;
  private plan!: CheckPlan;
  /** The plan's check names, for the accepted line of the log. */
  private planNames = '';
  private readonly sessions = new Map<string, SessionState>();

  constructor(private readonly deps: SmtpFrontDeps) {
    applySmtpServerPatches();
    this.trusted = new NetworkList(deps.config.smtp.trustedNetworks);
    this.localDomains = new Set(deps.config.local.domains);
    // Without a plan (`sendmail -bs`, inetd `smtpd`): the daemon's mandatory RCPT checks, relay
    // then recipients, so a session on stdin refuses what the daemon's port refuses.
    const env = (name: string) => ({ config: deps.config, options: new ConfigReader('(default)', '', {}, ['checks', name]), isLocal: (a: string) => this.isLocal(a), ...(deps.checkRecipient ? { checkRecipient: deps.checkRecipient } : {}) });
    this.setChecks(deps.checks ?? {
      connect: [], helo: [], mail: [], data: [],
      rcpt: [createRelayCheck(env('relay')), ...(deps.checkRecipient ? [createRecipientsCheck(env('recipients'))] : [])],
    });
  }

  private isLocal(address: string): boolean {
    return this.deps.isLocal ? this.deps.isLocal(address) : this.localDomains.has(domainOf(address));
  }

  private state(session: SMTPServerSession): SessionState {
    let st = this.sessions.get(session.id);
    if (!st) this.sessions.set(session.id, (st = { connection: {}, messages: 0 }));
    return st;
  }

  /** The check context for a phase, from what smtp-server knows of the session. */
  private context(phase: Phase, session: SMTPServerSession, kind: ListenerKind | 'stream', extra: Partial<CheckContext> = {}): CheckContext {
    const { config } = this.deps;
    const st = this.state(session);
    const mailFrom = session.envelope?.mailFrom;
    const inTransaction = phase === 'mail' || phase === 'rcpt' || phase === 'data';
    const transaction = inTransaction && st.transaction?.envelope === session.envelope ? st.transaction.notes : undefined;
    return {
      phase,
      sessionId: session.id,
      listener: kind,
      trusted: this.isTrusted(session.remoteAddress),
      connection: st.connection,
      ...(transaction ? { transaction } : {}),
      clientAddress: plainAddress(session.remoteAddress),
      ...(session.clientHostname && !session.clientHostname.startsWith('[') ? { clientHostname: session.clientHostname } : {}),
      ...(session.hostNameAppearsAs ? { helo: session.hostNameAppearsAs } : {}),
      ...(mailFrom ? { sender: qualify(mailFrom.address, config.hostname) } : {}),
      recipients: (session.envelope?.rcptTo ?? []).map((r) => qualify(r.address, config.hostname)),
      ...(authUser(session) ? { authUser: authUser(session)! } : {}),
      tls: !!session.secure,
      smtputf8: !!(mailFrom && mailFrom.args && (mailFrom.args as Record<string, unknown>).SMTPUTF8),
      messages: st.messages,
      ...extra,
    };
  }

  /** Runs a phase's checks; a refusal comes back as the SmtpError to reply with, and is logged. */
  private async runPhase(phase: Phase, ctx: CheckContext): Promise<{ error: SmtpError | null; verdict: Verdict }> {
    const verdict = await runChecks(this.plan[phase], phase, ctx, { timeoutMs: this.deps.config.checks.timeoutMs });
    if (verdict.action === 'next' || verdict.action === 'accept') return { error: null, verdict };
    if (phase !== 'rcpt' || !['relay', 'recipients'].includes(verdict.by ?? '')) {
      // relay and recipients log their own refusals with the address.
      log.info(ctx.queueId ?? null, 'refused by check', {
        check: verdict.by, phase, client: ctx.clientAddress, ...(ctx.recipient ? { rcpt: `<${ctx.recipient}>` } : {}), reply: `${verdict.code} ${verdict.enhanced} ${verdict.text}`,
      });
    }
    return { error: new SmtpError(verdict.action === 'disconnect' ? 421 : verdict.code, verdict.enhanced, verdict.text), verdict };
  }

  private ended(session: SMTPServerSession): void {
    if (!this.sessions.delete(session.id)) return;
    for (const c of allChecks(this.plan)) c.sessionEnded?.(session.id);
  }

  isTrusted(address: string): boolean {
    return this.deps.trustAll === true || this.trusted.contains(address);
  }

  private options(kind: ListenerKind | 'stream' = 'stream', listenHost = ''): SMTPServerOptions & SessionLimitOptions {
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
      ...(users ? { onAuth: createAuthHandler(users), authAvailable: () => users.hasUsers() } : {}),
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
      maxCommandLength: config.smtp.maxCommandLength,
      maxConnectionsPerIp: config.smtp.maxConnectionsPerIp,
      sessionTimeoutMs: config.smtp.sessionTimeoutMs,
      maxErrors: config.smtp.maxErrors,
      // Early-talker detection is for the MX port; people's mail programs on 587/465 are not bots.
      greetDelayMs: kind === 'mx' ? config.smtp.greetDelayMs : 0,
      isTrustedAddress: (a: string) => this.isTrusted(a),
      // Synchronous when there is nothing to check: smtp-server's default defers with
      // setImmediate, and a trusted client greeted at once (patches.ts) whose first command is
      // read in that gap would get "421 You talk too soon".
      onConnect: (session, cb) => {
        this.state(session);
        if (!this.plan.connect.length) return cb();
        this.runPhase('connect', this.context('connect', session, kind)).then(({ error }) => cb(error ?? undefined), (err: Error) => cb(err));
      },
      onClose: (session) => this.ended(session),
      onMailFrom: (address, session, cb) => {
        this.mailFrom(address.address, session, kind).then((err) => cb(err ?? undefined), (err: Error) => cb(err));
      },
      onRcptTo: (address, session, cb) => {
        const rcpt = qualify(address.address, config.hostname);
        // "/path@x", "|cmd@x": file and pipe targets come only from our aliases and .forward files.
        const notMailbox = nonMailboxReason(rcpt);
        if (notMailbox) {
          log.info(null, 'recipient refused: not a mailbox', { client: session.remoteAddress, rcpt: `<${address.address}>` });
          return cb(replies.notMailbox(address.address, notMailbox));
        }
        if (!isValidEnvelopeAddress(rcpt)) return cb(replies.badRecipient(address.address));
        if (session.envelope.rcptTo.length >= config.smtp.maxRecipients) return cb(replies.tooManyRecipients(config.smtp.maxRecipients));
        this.runPhase('rcpt', this.context('rcpt', session, kind, { recipient: rcpt })).then(({ error }) => cb(error ?? undefined), (err: Error) => cb(err));
      },
      onData: (stream, session, cb) => {
        this.receive(stream, session, kind).then((reply) => cb(null, reply), (err: Error) => cb(err));
      },
    };
  }

  /** MAIL FROM: built-in rules (AUTH on submission, syntax, sender ownership), then helo and mail checks. */
  private async mailFrom(sender: string, session: SMTPServerSession, kind: ListenerKind | 'stream'): Promise<Error | null> {
    const { config } = this.deps;
    const st = this.state(session);
    // A new transaction: nothing checks learned about an earlier sender or message carries over.
    st.transaction = { envelope: session.envelope, notes: {} };
    // Like the per-address connection cap, for untrusted clients: our own bulk senders (a LAN
    // application, the bench) may keep one session open.
    if (st.messages >= config.smtp.maxMessagesPerConnection && !this.isTrusted(session.remoteAddress)) {
      return new SmtpError(421, '4.7.0', `Too many messages in one session (at most ${config.smtp.maxMessagesPerConnection}), reconnect to send more`);
    }
    if ((kind === 'submission' || kind === 'smtps') && !session.user) return replies.authRequired();
    const notMailbox = sender ? nonMailboxReason(sender) : null; // a bounce to it would name a path
    if (notMailbox) {
      log.info(null, 'sender refused: not a mailbox', { client: session.remoteAddress, from: `<${sender}>` });
      return replies.notMailboxSender(sender, notMailbox);
    }
    if (sender && !isValidEnvelopeAddress(qualify(sender, config.hostname))) return replies.badSender(sender);
    const user = authUser(session);
    if (user && sender && !ownsAddress(sendersOf(user, config), qualify(sender, config.hostname))) {
      log.info(null, 'sender refused', { user, from: `<${sender}>`, client: session.remoteAddress });
      return replies.senderNotOwned(sender, user);
    }
    // HELO checks run here, like Postfix's smtpd_delay_reject: smtp-server has no HELO hook, and
    // a refusal at MAIL tells the client the same thing.
    const helo = session.hostNameAppearsAs ?? '';
    if (this.plan.helo.length && st.heloChecked !== helo) {
      const { error } = await this.runPhase('helo', this.context('helo', session, kind));
      if (error) return error;
      st.heloChecked = helo;
    }
    if (!this.plan.mail.length) return null;
    const ctx = this.context('mail', session, kind, { sender: qualify(sender, config.hostname) });
    return (await this.runPhase('mail', ctx)).error;
  }

  private receive(stream: NodeJS.ReadableStream, session: SMTPServerSession, kind: ListenerKind | 'stream'): Promise<string> {
    const { config } = this.deps;
    const recipients = session.envelope.rcptTo.map((r) => qualify(r.address, config.hostname));
    const sender = session.envelope.mailFrom ? qualify(session.envelope.mailFrom.address, config.hostname) : '';
    const client = plainAddress(session.remoteAddress);
    const protocol = (session.transmissionType || 'ESMTP').replace(/^SMTP$/, 'SMTP');
    const trace = { helo: session.hostNameAppearsAs, clientAddress: client, protocol, hostname: config.hostname, recipients };
    const headerCheck = this.headerCheck(session);
    const source: IntakeSource = {
      kind: 'smtp',
      hostname: config.hostname,
      trace: (id) => receivedHeader(trace, id),
      limits: { maxSize: config.smtp.maxMessageSize, maxLineLength: config.smtp.maxLineLength },
      ...(headerCheck ? { headerCheck } : {}),
      refuse: (id) => {
        // Stream sessions (sendmail -bs, inetd) are scripts that write the whole session at once.
        if (kind === 'stream' || !(session as { unsyncPipelining?: boolean }).unsyncPipelining) return null;
        log.info(id, 'refused', { reason: 'unsynchronised pipelining after DATA', client: session.remoteAddress });
        return new SmtpError(554, '5.5.0', 'Message refused: data was sent before the 354 reply (unsynchronised pipelining, RFC 2920 3.1)');
      },
      checks: this.plan.data,
      context: (msg) => this.context('data', session, kind, msg),
      onRefusal: 'refuse',
      logFields: { client, checks: this.planNames || undefined },
    };
    const target = { ...this.deps.sink, checkTimeoutMs: config.checks.timeoutMs };
    return submit(target, source, { sender, recipients, via: this.deps.via, client, helo: session.hostNameAppearsAs }, stream as AsyncIterable<Buffer>).then(
      (id) => {
        // get, not state(): a client gone by now must not leave a session entry behind.
        const st = this.sessions.get(session.id);
        if (st) {
          st.messages++;
          st.transaction = undefined; // the message is done, whatever smtp-server does next
        }
        return replies.queued(id);
      },
      (err: unknown) => {
        const st = this.sessions.get(session.id);
        if (st) st.transaction = undefined;
        throw err;
      },
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
      // A failed bind is the ListenError below, not also a log line.
      let bound = false;
      server.on('error', (err) => bound && log.warn(null, 'smtp error', { error: err.message }));
      await new Promise<void>((resolve, reject) => {
        // The same words as `tidemail check` (who holds the port, the fix) and a sysexits code.
        const key = kind === 'mx' ? 'listen' : kind;
        const onError = (err: NodeJS.ErrnoException) => reject(new ListenError(describeBindError(key, a, err, this.deps.config.user, true)));
        server.server.once('error', onError);
        server.listen(a.port, a.host, () => {
          server.server.off('error', onError);
          bound = true;
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

  /** New checks for new sessions (SIGHUP); sessions already running keep theirs. */
  setChecks(plan: CheckPlan): void {
    this.plan = plan;
    this.planNames = [...new Set(Object.values(plan).flat().map((c) => c.name))].join(',');
  }

  /**
   * Re-reads the certificate pair (SIGHUP after a renewal). After privileges are dropped the key
   * must be readable by the run user for this to work; otherwise the old pair stays, with a warning.
   */
  reloadTls(config: Config): void {
    if (!this.tls) return;
    let fresh: TlsCredentials | null;
    try {
      fresh = loadTlsCredentials(config);
    } catch (err) {
      log.warn(null, 'TLS certificate not reloaded, keeping the old one', { error: (err as Error).message.split('\n')[0], fix: 'make the key readable by the daemon user, or restart the daemon' });
      return;
    }
    if (!fresh) return;
    this.tls = fresh;
    for (const s of this.servers) (s as unknown as { updateSecureContext(o: object): void }).updateSecureContext({ key: fresh.key, cert: fresh.cert });
    log.info(null, 'TLS certificate reloaded', { cert: config.smtp.tlsCert });
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
