// The SMTP front door: one listener per configured address (IPv4 and IPv6), relay control by
// trusted_networks or AUTH, and the receive path into a MessageSink. The protocol itself is our
// own engine's (src/smtp/wire/); this file holds the rules: which checks run at each phase, who
// may relay and send as whom, and what happens to the message.
// Listener kinds: 'mx' (port 25: AUTH optional), 'submission' (587: STARTTLS, AUTH required)
// and 'smtps' (465: implicit TLS, AUTH required).

import type { Duplex } from 'node:stream';
import { runChecks, type CheckContext, type ConnectionNotes, type Phase, type TransactionNotes, type Verdict } from '../checks/check.js';
import { createCheck as createRecipientsCheck } from '../checks/recipients.js';
import { createCheck as createRelayCheck } from '../checks/relay.js';
import { allChecks, type CheckPlan } from '../checks/registry.js';
import { NetworkList, plainAddress } from '../config/cidr.js';
import { ConfigReader } from '../config/reader.js';
import { ConfigError, SmtpError } from '../errors.js';
import { describeBindError, ListenError } from '../doctor/ports.js';
import type { Config, ListenAddress } from '../config/schema.js';
import { log } from '../log/log.js';
import { repeats } from '../log/repeats.js';
import { mib, QueueSpace, reserveOf, type SpaceVerdict } from '../queue/free-space.js';
import { domainOf, isValidEnvelopeAddress, nonMailboxReason, qualify } from '../message/address.js';
import { clearAuthAllowed, createAuthHandler } from './auth.js';
import { submit, type IntakeSource } from '../intake/pipeline.js';
import { receivedHeader, type MessageSink } from './receive.js';
import { replies } from './replies.js';
import { fromAddresses, ownsAddress, sendersOf } from './sender-control.js';
import { loadTlsCredentials, type TlsCredentials } from './tls.js';
import type { UsersStore } from './users-file.js';
import { SmtpListeners } from './wire/listener.js';
import { TlsContext } from './wire/tls-context.js';
import { transmissionType, type EnvelopeAddress, type SessionHooks, type SessionLimits, type WireSession } from './wire/types.js';

export type ListenerKind = 'mx' | 'submission' | 'smtps';

/** What one connection carries from phase to phase. */
interface SessionState {
  connection: ConnectionNotes;
  /**
   * The current transaction's notes, made at MAIL FROM. Tied to the envelope object it was made
   * for: the engine replaces session.envelope at RSET, HELO/EHLO, STARTTLS and after DATA, so
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
  private readonly listeners: SmtpListeners;
  private tls: TlsCredentials | null | undefined;
  /** node:tls and the secure context, made at the first listen() when a certificate exists. */
  private tlsContext: TlsContext | null = null;
  private plan!: CheckPlan;
  /** The plan's check names, for the accepted line of the log. */
  private planNames = '';
  private readonly sessions = new Map<string, SessionState>();
  /** state_dir's free space, for [queue] queue_minfree at MAIL FROM. */
  private readonly space: QueueSpace;
  /** queue_minfree (null: auto) and max_message_size; a reload's values arrive with reloadTls(config). */
  private minfree: number | null;
  private maxMessageSize: number;

  constructor(private readonly deps: SmtpFrontDeps) {
    this.minfree = deps.config.queue.queueMinfree;
    this.maxMessageSize = deps.config.smtp.maxMessageSize;
    this.space = new QueueSpace(deps.config.stateDir, (below, free, minfree) => {
      const fields = { free: mib(free), queue_minfree: mib(minfree), state_dir: deps.config.stateDir };
      if (below) log.warn(null, 'refusing new mail: too little free space for the queue (452 4.3.1 at MAIL FROM)', { ...fields, fix: `free space on the filesystem of ${deps.config.stateDir}, or lower [queue] queue_minfree` });
      else log.warn(null, 'accepting new mail again: free space is back above queue_minfree', fields);
    });
    this.trusted = new NetworkList(deps.config.smtp.trustedNetworks);
    const { smtp } = deps.config;
    this.listeners = new SmtpListeners({ maxClients: smtp.maxClients, maxConnectionsPerIp: smtp.maxConnectionsPerIp, isTrusted: (a) => this.isTrusted(a) });
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

  private state(session: WireSession): SessionState {
    let st = this.sessions.get(session.id);
    if (!st) this.sessions.set(session.id, (st = { connection: {}, messages: 0 }));
    return st;
  }

  /** The check context for a phase, from what the engine knows of the session. */
  private context(phase: Phase, session: WireSession, kind: ListenerKind | 'stream', extra: Partial<CheckContext> = {}): CheckContext {
    const { config } = this.deps;
    const st = this.state(session);
    const mailFrom = session.envelope.mailFrom;
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
      ...(session.hostNameAppearsAs ? { helo: session.hostNameAppearsAs } : {}),
      ...(mailFrom ? { sender: qualify(mailFrom.address, config.hostname) } : {}),
      recipients: session.envelope.rcptTo.map((r) => qualify(r.address, config.hostname)),
      ...(authUser(session) ? { authUser: authUser(session)! } : {}),
      tls: !!session.secure,
      smtputf8: mailFrom?.args.SMTPUTF8 === true,
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

  private ended(session: WireSession): void {
    if (!this.sessions.delete(session.id)) return;
    for (const c of allChecks(this.plan)) c.sessionEnded?.(session.id);
  }

  isTrusted(address: string): boolean {
    return this.deps.trustAll === true || this.trusted.contains(address);
  }

  /** The session limits and decision hooks of a listener of `kind` on `listenHost` ('' for a stream). */
  private options(kind: ListenerKind | 'stream' = 'stream', listenHost = ''): { limits: SessionLimits; hooks: SessionHooks } {
    const { config, users } = this.deps;
    const clearAuth = clearAuthAllowed(listenHost, config.smtp.allowPlainAuthOnLocalhost);
    const limits: SessionLimits = {
      name: config.hostname,
      maxMessageSize: config.smtp.maxMessageSize,
      commandTimeoutMs: config.smtp.commandTimeoutMs,
      maxCommandLength: config.smtp.maxCommandLength,
      sessionTimeoutMs: config.smtp.sessionTimeoutMs,
      maxErrors: config.smtp.maxErrors,
      // Early-talker detection is for the MX port; people's mail programs on 587/465 are not bots.
      greetDelayMs: kind === 'mx' ? config.smtp.greetDelayMs : 0,
    };
    const hooks: SessionHooks = {
      // Synchronous when there is nothing to check: the greeting goes out at once.
      onConnect: (session) => {
        this.state(session);
        if (!this.plan.connect.length) return null;
        return this.runPhase('connect', this.context('connect', session, kind)).then(({ error }) => error);
      },
      onClose: (session) => this.ended(session),
      onError: (err) => log.warn(null, 'smtp error', { error: err.message }),
      onMailFrom: (address, session) => this.mailFrom(address, session, kind),
      onRcptTo: (address, session) => this.rcptTo(address, session, kind),
      onData: (body, session) => this.receive(body, session, kind),
      ...(users
        ? {
            onAuth: createAuthHandler(users),
            authAvailable: () => users.hasUsers(),
            // AUTH sends the password itself: only inside TLS, or in clear on loopback when allowed.
            refuseAuth: (secure: boolean) => (secure || clearAuth ? null : replies.encryptionRequired()),
          }
        : {}),
    };
    return { limits, hooks };
  }

  /** RCPT TO: not a file or pipe, valid, under max_recipients; then the rcpt checks. */
  private rcptTo(address: EnvelopeAddress, session: WireSession, kind: ListenerKind | 'stream'): Error | null | Promise<Error | null> {
    const { config } = this.deps;
    const rcpt = qualify(address.address, config.hostname);
    // "/path@x", "|cmd@x": file and pipe targets come only from our aliases and .forward files.
    const notMailbox = nonMailboxReason(rcpt);
    if (notMailbox) {
      log.info(null, 'recipient refused: not a mailbox', { client: session.remoteAddress, rcpt: `<${address.address}>` });
      return replies.notMailbox(address.address, notMailbox);
    }
    if (!isValidEnvelopeAddress(rcpt)) return replies.badRecipient(address.address);
    if (session.envelope.rcptTo.length >= config.smtp.maxRecipients) return replies.tooManyRecipients(config.smtp.maxRecipients);
    return this.runPhase('rcpt', this.context('rcpt', session, kind, { recipient: rcpt })).then(({ error }) => error);
  }

  /**
   * MAIL FROM: built-in rules (AUTH on submission, syntax, sender ownership), room in the queue
   * (queue_minfree), then helo and mail checks.
   */
  private mailFrom(address: EnvelopeAddress, session: WireSession, kind: ListenerKind | 'stream'): Error | null | Promise<Error | null> {
    const { config } = this.deps;
    const sender = address.address;
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
    // Trusted clients too: it is the same disk. SIZE= was checked against max_message_size (552)
    // by the engine; a figure under a second old answers without waiting (one statfs a second).
    const size = typeof address.args.SIZE === 'string' ? Number(address.args.SIZE) : 0;
    const room = this.space.check((fsBytes) => reserveOf(this.minfree, this.maxMessageSize, fsBytes), size);
    if (room instanceof Promise) return room.then((r) => (r ? this.noRoom(r, size, session) : this.afterRoom(sender, session, kind, st)));
    if (room) return this.noRoom(room, size, session);
    return this.afterRoom(sender, session, kind, st);
  }

  /** 452 4.3.1; a refusal for the size alone is logged here (being below the reserve, once by QueueSpace). */
  private noRoom(room: SpaceVerdict, size: number, session: WireSession): SmtpError {
    if (room.belowReserve) return replies.noRoom(0);
    // Once a minute (log/repeats.ts): a client retrying a big message in a loop writes no line each.
    repeats.log('smtp: SIZE refused for space', 'info', 'sender refused: too little free space for the announced SIZE', { client: session.remoteAddress, size, free: mib(room.free), queue_minfree: mib(room.minfree) });
    return replies.noRoom(size);
  }

  private afterRoom(sender: string, session: WireSession, kind: ListenerKind | 'stream', st: SessionState): Error | null | Promise<Error | null> {
    // Synchronous when there is nothing to check: the reply goes out with the others of its group.
    const helo = session.hostNameAppearsAs;
    if ((!this.plan.helo.length || st.heloChecked === helo) && !this.plan.mail.length) return null;
    return this.mailChecks(sender, session, kind, st);
  }

  /**
   * HELO checks run at the first MAIL after HELO, like Postfix's smtpd_delay_reject (a refusal at
   * MAIL tells the client the same thing), then the mail checks.
   */
  private async mailChecks(sender: string, session: WireSession, kind: ListenerKind | 'stream', st: SessionState): Promise<Error | null> {
    const helo = session.hostNameAppearsAs;
    if (this.plan.helo.length && st.heloChecked !== helo) {
      const { error } = await this.runPhase('helo', this.context('helo', session, kind));
      if (error) return error;
      st.heloChecked = helo;
    }
    if (!this.plan.mail.length) return null;
    const ctx = this.context('mail', session, kind, { sender: qualify(sender, this.deps.config.hostname) });
    return (await this.runPhase('mail', ctx)).error;
  }

  private receive(body: AsyncIterable<Buffer>, session: WireSession, kind: ListenerKind | 'stream'): Promise<string> {
    const { config } = this.deps;
    const recipients = session.envelope.rcptTo.map((r) => qualify(r.address, config.hostname));
    const sender = session.envelope.mailFrom ? qualify(session.envelope.mailFrom.address, config.hostname) : '';
    const client = plainAddress(session.remoteAddress);
    const protocol = transmissionType(session);
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
        if (kind === 'stream' || !session.unsyncPipelining) return null;
        log.info(id, 'refused', { reason: 'unsynchronised pipelining after DATA', client: session.remoteAddress });
        return new SmtpError(554, '5.5.0', 'Message refused: data was sent before the 354 reply (unsynchronised pipelining, RFC 2920 3.1)');
      },
      checks: this.plan.data,
      context: (msg) => this.context('data', session, kind, msg),
      onRefusal: 'refuse',
      logFields: { client, checks: this.planNames || undefined },
    };
    const target = { ...this.deps.sink, checkTimeoutMs: config.checks.timeoutMs };
    return submit(target, source, { sender, recipients, via: this.deps.via, client, helo: session.hostNameAppearsAs }, body).then(
      (id) => {
        // get, not state(): a client gone by now must not leave a session entry behind.
        const st = this.sessions.get(session.id);
        if (st) {
          st.messages++;
          st.transaction = undefined; // the message is done, whatever the client does next
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
  private headerCheck(session: WireSession): ((header: string) => Error | null) | undefined {
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
    if (this.tls && !this.tlsContext) this.tlsContext = await TlsContext.create(this.tls);
    if (kind === 'smtps' && addresses.length && !this.tlsContext) throw new ConfigError('smtps listeners need a TLS certificate\n  fix: set tls_cert and tls_key in [smtp]');
    for (const a of addresses) {
      const { limits, hooks } = this.options(kind, a.host);
      // The same words as `tidemail check` (who holds the port, the fix) and a sysexits code.
      const key = kind === 'mx' ? 'listen' : kind;
      await this.listeners.listen({ host: a.host, port: a.port, limits, hooks, tls: this.tlsContext, implicitTls: kind === 'smtps' }).catch((err: NodeJS.ErrnoException) => {
        throw new ListenError(describeBindError(key, a, err, this.deps.config.user, true));
      });
    }
  }

  /** Serves one session on an existing stream (inetd, `sendmail -bs`). Resolves when it ends. */
  serveStream(stream: Duplex, remoteAddress: string): Promise<void> {
    const { limits, hooks } = this.options();
    return this.listeners.serveStream(stream, plainAddress(remoteAddress), limits, hooks);
  }

  /** New checks for new sessions (SIGHUP); sessions already running keep theirs. */
  setChecks(plan: CheckPlan): void {
    this.plan = plan;
    this.planNames = [...new Set(Object.values(plan).flat().map((c) => c.name))].join(',');
  }

  /**
   * Re-reads the certificate pair (SIGHUP after a renewal). After privileges are dropped the key
   * must be readable by the run user for this to work; otherwise the old pair stays, with a warning.
   * Also takes the reloaded [queue] queue_minfree: this is the daemon's one call into the front
   * with the new configuration.
   */
  reloadTls(config: Config): void {
    this.minfree = config.queue.queueMinfree;
    this.maxMessageSize = config.smtp.maxMessageSize;
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
    this.tlsContext?.update(fresh);
    log.info(null, 'TLS certificate reloaded', { cert: config.smtp.tlsCert });
  }

  /** Stops listening; open sessions end between transactions (or after a grace period). */
  close(): Promise<void> {
    return this.listeners.close();
  }
}

function authUser(session: WireSession): string | null {
  return session.user || null;
}

export function fmt(a: ListenAddress): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
