// SMTP transport over nodemailer's SMTPConnection, shared by every route that speaks SMTP to
// its next hop: smarthost (TCP), MX (TCP to each MX in turn), ssh and wrapper (SMTP over a
// stream). TLS verified unless the route says otherwise, AUTH, PIPELINING (nodemailer
// pipelines the envelope), and pooled connections: several messages per connection up to the
// route's messages_per_connection, at most max_connections per destination.

import { setMaxListeners } from 'node:events';
import fs from 'node:fs';
import { rootCertificates } from 'node:tls';
import { isIP, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { log } from '../log/log.js';
import type { SmtpClientSpec } from '../routes/profile.js';
import { dial, DialError } from './dial.js';
import { authenticate } from './smtp-auth.js';
import { watchProgress } from './progress-watchdog.js';
import { DEADLINE_CODE, HEDGE_CODE, ReplyDeadlines, STALL_CODE } from './smtp-deadline.js';
import { ConnectionPool, destroyConnection, rememberTcp, resetTcp, tcpSocketOf, type PooledConnection } from './smtp-pool.js';
import { HeldAcrossLinkDown } from './smtp-after-dot.js';
import { ReplyPace, SlowHosts } from './smtp-slow-hosts.js';
import { raceSetups } from './setup-race.js';
import { connectFailure, isNetworkFailure, PLAIN_AUTH_CODE, resultOf, type SmtpErrorLike } from './smtp-results.js';
import { asSocket } from './stream-socket.js';
import { sameForAll, type DeliveryJob, type DeliveryResult, type Transport } from './transport.js';

export interface SmtpHop {
  /** For logs and DSNs: "host:port", or a description of the tunnel. */
  label: string;
  host: string;
  port: number;
  /** TLS server name to verify against (the MX or smarthost name); '' for none (an IP literal). */
  servername: string;
  /** Addresses of `host` already looked up (an MX host's AAAA and A), raced by dial(). */
  addresses?: string[];
  /** Resolves `host` when `addresses` are not given (a route's own DNS servers); default getaddrinfo. */
  resolve?: (name: string) => Promise<string[]>;
  /** Speak SMTP over this stream instead of a TCP connection (ssh, wrapper). */
  openStream?: () => Promise<Duplex>;
  /** Overrides the route's TLS policy for this hop (e.g. MTA-STS enforce). */
  tls?: SmtpClientSpec['tls'];
  tlsVerify?: boolean;
}

export interface SmtpTransportOptions {
  name: string;
  hostname: string;
  spec: SmtpClientSpec;
  maxConnections: number;
  messagesPerConnection: number;
  /** Connections are pooled per key: the route, or the destination domain for MX. */
  poolKey(job: DeliveryJob): string;
  /** The hops to try in order; a DeliveryResult when there is nowhere to go (e.g. no MX). */
  hops(job: DeliveryJob): Promise<SmtpHop[] | DeliveryResult>;
  /** Runs before each new connection (SMTP-after-POP). */
  beforeConnect?(): Promise<void>;
}

const AFTER_DOT = 'after the end of the data, before the reply: it may arrive twice';

/** How far one set-up got (openRaced). */
interface SetupStage {
  authenticating: boolean;
}

/** A failure to set up a session; `stalled` when the stall hedge cut it (worth one more round). */
type ConnectFailure = DeliveryResult & { stalled?: boolean };

/**
 * Rounds of one delivery cut by the stall hedge before one runs without it: on a 20 %-lossy
 * line a second connection stalls too often enough (the bench) that one hedge was not enough.
 */
const HEDGE_ROUNDS = 2;
/** A raced second set-up starts after half the stall limit, within these bounds (setup-race.ts). */
const RACE_MIN_STAGGER_MS = 250;
const RACE_MAX_STAGGER_MS = 1_000;
/** Set-ups at once for one delivery: its own and one raced beside it. */
const RACE_WIDTH = 2;

export class SmtpTransport implements Transport {
  readonly name: string;
  private readonly pools = new Map<string, ConnectionPool>();
  /** Hosts seen answering slowly with the stall hedge off: not hedged for a while. */
  private readonly slowHosts: SlowHosts;
  /** How fast this route's servers answer: the stall limit follows it (below stall_timeout). */
  private readonly pace = new ReplyPace();
  private readonly ca: string[] | undefined;
  /** Aborted by interrupt() (link down); replaced by a fresh one at once. */
  private abort = manyListeners(new AbortController());
  /** Every SMTP connection of this transport that is not closed yet, for interrupt(). */
  private readonly live = new Set<SMTPConnection>();
  /** Connections whose end of the data is sent and whose reply is awaited. */
  private readonly finishing = new Set<SMTPConnection>();
  /** …and of those, the ones a link-down caught: held for their reply, not cut (smtp-after-dot.ts). */
  private readonly held = new HeldAcrossLinkDown<SMTPConnection>();

  constructor(private readonly o: SmtpTransportOptions) {
    this.name = o.name;
    this.slowHosts = new SlowHosts(o.name);
    // A configured CA is trusted in addition to the public roots, never instead of them.
    this.ca = o.spec.caFile ? [...rootCertificates, fs.readFileSync(o.spec.caFile, 'utf8')] : undefined;
  }

  async deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    // Taken once: interrupt() replaces the controller, so a later link-down never touches a
    // delivery that starts after it, and this one sees its own.
    const signal = this.abort.signal;
    const key = this.o.poolKey(job);
    let pool = this.pools.get(key);
    if (!pool) this.pools.set(key, (pool = new ConnectionPool(this.o.maxConnections, this.o.messagesPerConnection)));
    // Where the delivery stood, for the interrupted line: after the end of the data a link-down
    // may mean the server kept it — the one case of a possible duplicate (at-least-once).
    let phase = 'waiting for a connection slot';
    if (!(await pool.slot(signal))) return interruptedResult(job, signal, phase);
    // transaction_timeout counts from here: connecting (every hop) and sending, together.
    const deadlineAt = Date.now() + this.o.spec.deadlines.transactionMs;
    let pc: PooledConnection | undefined;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      pool.release(pc);
    };
    const work = (async () => {
      // A round may be cut by the stall hedge (a reply that should come at once, silent for
      // stall_timeout, before the end of the data); the next runs at once on a new connection
      // with twice the patience, and the last without the hedge (HEDGE_ROUNDS).
      for (let round = 0; ; round++) {
        const hedgeMs = round < HEDGE_ROUNDS ? this.pace.hedgeMs(this.o.spec.stallMs) * 2 ** round : 0;
        const hedged = hedgeMs > 0;
        pc = round === 0 ? pool.takeIdle() : undefined;
        const fresh = !pc;
        phase = 'connecting';
        if (!pc) {
          const opened = await this.connectAny(job, deadlineAt, signal, hedgeMs, pool);
          if (!('conn' in opened)) {
            if (opened.stalled && hedged && !signal.aborted) {
              this.logStall(job, opened.message);
              continue;
            }
            return sameForAll(job, opened);
          }
          pc = opened;
          // Connected just as the link went down: the session is dropped with the rest.
          if (signal.aborted) {
            pc.broken = true;
            return interruptedResult(job, signal, phase);
          }
        }
        phase = 'before the end of the data';
        const conn = pc.conn;
        const results = await this.send(pc, job, deadlineAt, () => {
          phase = AFTER_DOT;
          this.finishing.add(conn);
        });
        this.finishing.delete(conn);
        if (pc.stalled && pc.hedged && !signal.aborted) {
          this.logStall(job, [...results.values()][0]?.message ?? 'stalled');
          destroyConnection(pc.conn);
          pc = undefined;
          continue;
        }
        // Learnt from a session set up for this message without the hedge (a spare's silence
        // was already counted by the delivery it was raced for).
        if (fresh && !pc.hedged) this.slowHosts.learn(pc, this.o.spec.stallMs, this.pace.usuallyFast(this.o.spec.stallMs));
        return results;
      }
    })().finally(release);
    // Link down: the slot is free at once and the envelopes go back to the queue, whatever
    // nodemailer still has to say about the socket interrupt() destroyed — except after the end
    // of the data, when the server may already have the message: the session is held for its
    // reply (smtp-after-dot.ts: while down, and after link-up as long as a resent reply needs),
    // and only a reply that does not come makes it "interrupted" and a possible duplicate.
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<Map<string, DeliveryResult>>((resolve) => {
      onAbort = () => {
        if (pc) pc.broken = true;
        const cut = () => {
          release();
          resolve(interruptedResult(job, signal, phase));
        };
        if (phase === AFTER_DOT && pc) {
          const conn = pc.conn;
          log.info(job.msgid, 'link down after the end of the data: waiting for the reply, not sending again', { route: this.name });
          this.held.hold(conn, tcpSocketOf(conn), () => {
            destroyConnection(conn);
            cut();
          });
        } else cut();
      };
      signal.addEventListener('abort', onAbort, { once: true });
    });
    let workFirst = false;
    try {
      const results = await Promise.race([work.then((r) => ((workFirst = true), r)), aborted]);
      if (!signal.aborted) return results;
      return workFirst && phase === AFTER_DOT && pc?.answered ? results : interruptedResult(job, signal, phase);
    } finally {
      if (pc) this.held.release(pc.conn);
      signal.removeEventListener('abort', onAbort!);
    }
  }

  /**
   * The route's link went down: every session of this transport — idle, connecting or in the
   * middle of a transaction — is cut at once (its TCP connection is dead or about to be), and
   * the deliveries waiting for a slot give up. Their envelopes go back to the queue as
   * "interrupted", which is not an attempt.
   */
  interrupt(why: string): void {
    const old = this.abort;
    this.abort = manyListeners(new AbortController());
    old.abort(new Error(why));
    for (const pool of this.pools.values()) pool.dropIdle('broken');
    // Waiting for the reply to the end of the data: held by deliver()'s abort listener instead.
    for (const conn of this.live) if (!this.finishing.has(conn)) destroyConnection(conn);
    this.live.clear();
    this.finishing.clear();
    this.held.linkDown();
  }

  /** The link is up again: the sessions held for a reply get the time a resent one needs. */
  resume(): void {
    this.held.linkUp();
  }

  stopWaiting(): void {
    this.held.cutAll();
  }

  /** Tries each hop in order; the first that accepts a session wins. */
  private async connectAny(job: DeliveryJob, deadlineAt: number, signal: AbortSignal, hedgeMs: number, pool: ConnectionPool): Promise<PooledConnection | ConnectFailure> {
    const hops = await this.o.hops(job);
    if (!Array.isArray(hops)) return hops;
    const down: DeliveryResult = { outcome: 'interrupted', message: 'link went down before connecting' };
    let last: DeliveryResult = { outcome: 'tempfail', message: 'no host to connect to' };
    if (signal.aborted) return down;
    if (this.o.beforeConnect) {
      try {
        await this.o.beforeConnect();
      } catch (err) {
        const text = `SMTP-after-POP login failed: ${(err as Error).message}`;
        log.warn(null, 'pop-before-smtp failed', { route: this.name, error: text });
        return { outcome: 'tempfail', message: text };
      }
    }
    for (const hop of hops) {
      if (signal.aborted) return down; // not one connection attempt once the link is down
      if (Date.now() >= deadlineAt) break; // the transaction_timeout failure is already in `last`
      try {
        return await this.openRaced(job, hop, deadlineAt, hedgeMs, signal, pool);
      } catch (err) {
        if (signal.aborted) return down;
        // The session stalled while it was set up: the next round starts from the first hop.
        if ((err as SmtpErrorLike).code === HEDGE_CODE) return { outcome: 'tempfail', message: (err as Error).message, remote: hop.host, retrySoon: true, stalled: true };
        last = connectFailure(this.name, this.o.spec, hop, err as SmtpErrorLike);
        // A refused login is the same on every hop; don't hammer the others with it.
        if ((err as SmtpErrorLike).code === 'EAUTH') break;
      }
    }
    return last;
  }

  /**
   * A hedged set-up (stall hedge on, host not known as slow, TCP) not ready after half the
   * stall limit gets a second one beside it, and one the hedge cuts is replaced at once
   * (setup-race.ts): two under way until one is ready, six at most — two with the stall limit,
   * two with twice it, two without (the last stand in for the rounds of an unraced delivery).
   * A spare ready later goes idle in the pool for the next message, unless the link went down.
   */
  private openRaced(job: DeliveryJob, hop: SmtpHop, deadlineAt: number, hedgeMs: number, signal: AbortSignal, pool: ConnectionPool): Promise<PooledConnection> {
    // A set-up that got as far as AUTH has a working path; a second would only log in twice.
    const stages: SetupStage[] = [];
    const open = (hedge: number) => {
      const stage: SetupStage = { authenticating: false };
      stages.push(stage);
      return this.openWithFallback(hop, deadlineAt, hedge, signal, stage);
    };
    if (hedgeMs <= 0 || hop.openStream || this.slowHosts.has(hop)) return open(hedgeMs);
    return raceSetups(open, {
      staggerMs: Math.min(RACE_MAX_STAGGER_MS, Math.max(RACE_MIN_STAGGER_MS, hedgeMs / 2)),
      width: RACE_WIDTH,
      hedges: [hedgeMs, hedgeMs, 2 * hedgeMs, 2 * hedgeMs, 0, 0],
      mayStart: () => !signal.aborted && Date.now() < deadlineAt && !stages.some((s) => s.authenticating),
      onStart: (why, ms, err) => {
        if (why === 'stalled') this.logStall(job, (err as Error).message);
        else log.info(job.msgid, 'session not set up yet; racing a second connection', { route: this.name, hop: hop.label, after: `${(ms / 1000).toFixed(1)}s` });
      },
      onSpare: (pc) => (signal.aborted ? destroyConnection(pc.conn) : pool.offerIdle(pc)),
      // A stall says least: the other set-up's own failure (refused, TLS, AUTH) is reported.
      isStall: (err) => (err as SmtpErrorLike).code === HEDGE_CODE,
    });
  }

  /**
   * Opportunistic TLS that fails in the handshake (old ciphers, a broken middlebox) is retried
   * once in plaintext on the same hop, as Postfix does at level "may": encryption was only
   * ever a bonus there, and the alternative is mail stuck until the server is fixed.
   */
  private async openWithFallback(hop: SmtpHop, deadlineAt: number, hedgeMs: number, signal: AbortSignal, stage?: SetupStage): Promise<PooledConnection> {
    try {
      return await this.open(hop, deadlineAt, hedgeMs, signal, stage);
    } catch (err) {
      const e = err as SmtpErrorLike;
      if ((hop.tls ?? this.o.spec.tls) !== 'opportunistic' || !e.duringTls || e.code === DEADLINE_CODE || e.code === STALL_CODE || e.code === HEDGE_CODE) throw err;
      log.warn(null, 'STARTTLS failed, retrying without TLS', { route: this.name, hop: hop.label, error: (err as Error).message.trim() });
      return this.open({ ...hop, tls: 'none' }, deadlineAt, hedgeMs, signal, stage);
    }
  }

  /** "smarthost smtp.example.net:587", "MX mx1.example.org[192.0.2.1]:25": who misbehaved. */
  private peer(hop: SmtpHop): string {
    const kind = (this.o.spec as { kind?: string }).kind;
    return `${kind === 'mx' ? 'MX' : kind === 'smarthost' ? 'smarthost' : 'next hop'} ${hop.label}`;
  }

  /** `signal` is the delivery's own: a link-down during any await here stops the dial. */
  private async open(hop: SmtpHop, deadlineAt: number, hedgeMs: number, signal: AbortSignal, stage?: SetupStage): Promise<PooledConnection> {
    const spec = this.o.spec;
    const tls = hop.tls ?? spec.tls;
    const verify = hop.tlsVerify ?? (tls === 'opportunistic' ? false : spec.tlsVerify);
    // Loaded on first use: an idle or offline daemon does not carry the SMTP client (~10 MB).
    const { default: SMTPConnectionClass } = await import('nodemailer/lib/smtp-connection/index.js');
    // TCP hops are dialled here (Happy Eyeballs over every address, keepalive; dial.ts) and
    // handed over: nodemailer alone would try IPv4 first and never the other family.
    let stream: Duplex | undefined;
    let connected: Socket | undefined;
    if (signal.aborted) throw new Error('link went down before connecting');
    if (hop.openStream) stream = asSocket(await hop.openStream());
    else {
      try {
        connected = await dial({
          host: hop.host,
          port: hop.port,
          addresses: hop.addresses,
          resolver: hop.resolve,
          connectTimeoutMs: Math.max(1, Math.min(spec.connectTimeoutMs, deadlineAt - Date.now())),
          keepAliveMs: spec.keepAliveMs,
          // The delivery's signal, not the transport's current one: a link-down since the
          // delivery began must stop this dial too (it replaced this.abort with a fresh one).
          signal,
        });
      } catch (err) {
        // connectFailure says "cannot connect to LABEL: …" itself; pass only what went wrong where.
        throw err instanceof DialError ? Object.assign(new Error(err.detail), { code: err.code }) : err;
      }
      // nodemailer sets its own keepalive (30 s) on the socket it is given; the route's wins.
      const sock = connected;
      sock.setKeepAlive = (enable?: boolean) => Socket.prototype.setKeepAlive.call(sock, enable, spec.keepAliveMs);
      stream = connected;
      // Logs and results name the address actually used: "mx.example.org[192.0.2.1]:25".
      if (hop.addresses && hop.addresses.length > 1 && connected.remoteAddress) {
        hop = { ...hop, host: connected.remoteAddress, label: `${hop.servername || hop.host}[${connected.remoteAddress}]:${hop.port}` };
      }
    }
    const conn = new SMTPConnectionClass({
      host: hop.host,
      port: hop.port,
      connection: stream,
      secure: tls === 'implicit',
      requireTLS: tls === 'starttls',
      ignoreTLS: tls === 'none',
      opportunisticTLS: tls === 'opportunistic',
      name: spec.heloName ?? this.o.hostname,
      // nodemailer's setup bounds are only a backstop: ReplyDeadlines fires first, with a clear
      // message (its budget covers connect, greeting and the TLS handshake together).
      connectionTimeout: spec.connectTimeoutMs + spec.deadlines.greetingMs + spec.deadlines.heloMs + 1000,
      greetingTimeout: spec.deadlines.greetingMs + 1000,
      socketTimeout: 5 * 60_000,
      // No servername for an IP literal (Node's DEP0123); the certificate is still checked against it.
      tls: { rejectUnauthorized: verify, servername: hop.servername && !isIP(hop.servername) ? hop.servername : undefined, ca: this.ca, minVersion: 'TLSv1.2' },
      logger: false,
    } as SMTPConnection.Options);
    this.live.add(conn);
    if (connected) rememberTcp(conn, connected);
    conn.once('end', () => this.live.delete(conn));
    const hedge = hedgeMs > 0 && !this.slowHosts.has(hop) ? { ms: hedgeMs } : undefined;
    const deadlines = new ReplyDeadlines(conn, spec.deadlines, this.peer(hop), spec.connectTimeoutMs, false, hedge, this.pace.record);
    deadlines.startTransaction(deadlineAt);
    if (connected) {
      const peer = this.peer(hop);
      const outer = () => (conn as unknown as { _socket?: { bytesRead: number; writableLength: number } })._socket;
      watchProgress(connected, outer, spec.progressMs, (bytes, s) => {
        // Reset first: what is still buffered must not reach the server later (destroyConnection).
        resetTcp(conn);
        deadlines.fail(`no progress for ${s} s on the connection to ${peer} (${bytes} bytes unacknowledged, nothing received; progress_timeout): the link passes nothing; trying again on a new connection`, STALL_CODE);
      });
    }
    const pc: PooledConnection = { conn, deadlines, hop, sent: 0, broken: false, hedged: !!hedge };
    await new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (err?: Error) => {
        if (settled) return;
        settled = true;
        // nodemailer leaves `upgrading` set when the STARTTLS handshake did not finish.
        if (err && (conn.upgrading || (err as SmtpErrorLike).code === 'ETLS')) (err as SmtpErrorLike).duringTls = true;
        if (err) reject(err);
        else resolve();
      };
      conn.on('error', (err: Error) => {
        pc.broken = true;
        done(err);
      });
      conn.on('end', () => {
        pc.broken = true;
        done(new Error('connection closed by the server'));
      });
      conn.connect(() => {
        if (!spec.auth) return done();
        // No password over a session that is not encrypted: tls = "none" is refused at load
        // without allow_plain_auth, and this catches STARTTLS missing from the EHLO reply or
        // failing (a peer, or someone in between, stripping it to read the login).
        if (!conn.secure && !spec.allowPlainAuth) {
          const why = tls === 'none' ? 'TLS is off for this route' : 'the session is not encrypted (STARTTLS was not offered, or it failed)';
          done(Object.assign(new Error(`not sending AUTH to ${this.peer(hop)}: ${why}; the login would travel in clear text`), { code: PLAIN_AUTH_CODE }));
          conn.close();
          return;
        }
        if (stage) stage.authenticating = true;
        authenticate(conn, spec.auth).then(
          () => done(),
          (err: Error) => {
            done(Object.assign(err, { code: 'EAUTH' }));
            conn.close();
          },
        );
      });
    });
    return pc;
  }

  private send(pc: PooledConnection, job: DeliveryJob, deadlineAt: number, bodySent: () => void): Promise<Map<string, DeliveryResult>> {
    const host = pc.hop.host;
    pc.deadlines.startTransaction(deadlineAt);
    const envelope = { from: job.sender, to: job.recipients.map((r) => r.recipient), size: job.size, use8BitMime: true };
    return new Promise((resolve) => {
      const body = job.body();
      body.once('end', bodySent); // nodemailer has read it all: the final dot follows at once
      pc.conn.send(envelope as never, body, (err: SmtpErrorLike | null, info?: { rejectedErrors?: SmtpErrorLike[]; response?: string }) => {
        pc.sent++;
        pc.answered = !err || !!err.responseCode; // the server said something about this message
        pc.deadlines.endTransaction();
        body.destroy();
        const results = new Map<string, DeliveryResult>();
        if (err) {
          pc.broken = true; // the session state after a failed transaction is not worth trusting
          if (err.code === HEDGE_CODE) pc.stalled = true;
          const perRcpt = new Map((err.rejectedErrors ?? []).map((e) => [e.recipient, e]));
          for (const r of job.recipients) results.set(r.envId, resultOf(perRcpt.get(r.recipient) ?? err, host));
          if (err.code === STALL_CODE || isNetworkFailure(err)) for (const r of results.values()) if (r.outcome === 'tempfail') r.retrySoon = true;
          return resolve(results);
        }
        const rejected = new Map((info?.rejectedErrors ?? []).map((e) => [e.recipient, e]));
        for (const r of job.recipients) {
          const e = rejected.get(r.recipient);
          results.set(r.envId, e ? resultOf(e, host) : { outcome: 'ok', message: info?.response ?? '250 ok', remote: host });
        }
        resolve(results);
      });
    });
  }

  /** A round the stall hedge cut: said once, at info (it is the link, not the server). */
  private logStall(job: DeliveryJob, why: string): void {
    log.info(job.msgid, 'stalled; trying once more on a new connection', { route: this.name, why });
  }

  async close(): Promise<void> {
    for (const pool of this.pools.values()) pool.dropIdle('quit');
  }
}

/** Every delivery waiting for a slot listens for the link going down: dozens are normal. */
function manyListeners(c: AbortController): AbortController {
  setMaxListeners(0, c.signal);
  return c;
}

/** The link went down under this delivery: back to the queue, not counted as an attempt. */
function interruptedResult(job: DeliveryJob, signal: AbortSignal, phase: string): Map<string, DeliveryResult> {
  const why = signal.reason instanceof Error ? signal.reason.message : 'link down';
  return sameForAll(job, { outcome: 'interrupted', message: `interrupted: ${why} (${phase})` });
}
