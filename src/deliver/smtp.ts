// Smarthost transport over nodemailer's SMTPConnection: TLS verified by default, AUTH
// PLAIN/LOGIN, PIPELINING (nodemailer pipelines the envelope), connections reused for several
// messages up to the route's messages_per_connection, at most max_connections at once.

import fs from 'node:fs';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { log } from '../log/log.js';
import type { SmarthostRoute } from '../routes/profile.js';
import { sameForAll, type DeliveryJob, type DeliveryResult, type Transport } from './transport.js';

interface SmtpErrorLike extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  recipient?: string;
  rejectedErrors?: SmtpErrorLike[];
}

interface PooledConnection {
  conn: SMTPConnection;
  sent: number;
  broken: boolean;
}

const IDLE_CLOSE_MS = 5_000;

export class SmarthostTransport implements Transport {
  readonly name: string;
  private idle: { pc: PooledConnection; timer: NodeJS.Timeout }[] = [];
  private active = 0;
  private waiters: (() => void)[] = [];
  private ca: Buffer | undefined;

  constructor(private readonly route: SmarthostRoute, private readonly hostname: string) {
    this.name = route.name;
    this.ca = route.caFile ? fs.readFileSync(route.caFile) : undefined;
  }

  private get label(): string {
    return `${this.route.host}:${this.route.port}`;
  }

  async deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    await this.slot();
    let pc: PooledConnection | undefined;
    try {
      try {
        pc = this.takeIdle() ?? (await this.open());
      } catch (err) {
        return sameForAll(job, this.connectFailure(err as SmtpErrorLike));
      }
      return await this.send(pc, job);
    } finally {
      this.release(pc);
    }
  }

  private slot(): Promise<void> {
    if (this.active < this.route.maxConnections) {
      this.active++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(() => { this.active++; resolve(); }));
  }

  private takeIdle(): PooledConnection | undefined {
    const entry = this.idle.pop();
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    return entry.pc;
  }

  private release(pc: PooledConnection | undefined): void {
    this.active--;
    if (pc) {
      if (pc.broken || pc.sent >= this.route.messagesPerConnection) this.quit(pc);
      else {
        const timer = setTimeout(() => {
          this.idle = this.idle.filter((e) => e.pc !== pc);
          this.quit(pc);
        }, IDLE_CLOSE_MS);
        timer.unref();
        this.idle.push({ pc, timer });
      }
    }
    this.waiters.shift()?.();
  }

  private quit(pc: PooledConnection): void {
    try {
      pc.conn.quit();
    } catch {
      pc.conn.close();
    }
  }

  private open(): Promise<PooledConnection> {
    const r = this.route;
    const conn = new SMTPConnection({
      host: r.host,
      port: r.port,
      secure: r.tls === 'implicit',
      requireTLS: r.tls === 'starttls',
      ignoreTLS: r.tls === 'none',
      name: r.heloName ?? this.hostname,
      connectionTimeout: r.connectTimeoutMs,
      greetingTimeout: 30_000,
      socketTimeout: 5 * 60_000,
      tls: { rejectUnauthorized: r.tlsVerify, servername: r.host, ca: this.ca, minVersion: 'TLSv1.2' },
      logger: false,
    } as SMTPConnection.Options);
    return new Promise((resolve, reject) => {
      const pc: PooledConnection = { conn, sent: 0, broken: false };
      let settled = false;
      conn.on('error', (err: Error) => {
        pc.broken = true;
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      conn.on('end', () => (pc.broken = true));
      conn.connect(() => {
        if (!r.auth) {
          settled = true;
          return resolve(pc);
        }
        conn.login({ user: r.auth.user, pass: r.auth.password }, (err) => {
          if (settled) return;
          settled = true;
          if (err) {
            conn.close();
            reject(Object.assign(err, { code: 'EAUTH' }));
          } else resolve(pc);
        });
      });
    });
  }

  private connectFailure(err: SmtpErrorLike): DeliveryResult {
    if (err.code === 'EAUTH') {
      const text = `authentication as ${this.route.auth?.user} failed at ${this.label}: ${err.response ?? err.message} (check ${this.route.auth?.passwordFile})`;
      log.warn(null, 'smarthost login failed', { route: this.name, error: text });
      // A wrong password is our configuration, not the recipient's fault: defer, never bounce.
      return { outcome: 'tempfail', message: text, remote: this.route.host };
    }
    const tls = err.code === 'ETLS' || /certificate|self.signed|TLS/i.test(err.message);
    const text = tls
      ? `TLS to ${this.label} failed: ${err.message} (certificates are verified; set tls_ca_file for a private CA)`
      : `cannot connect to ${this.label}: ${err.message}`;
    log.warn(null, 'smarthost unreachable', { route: this.name, error: text });
    // Any failure before a server has judged the message is temporary.
    return { outcome: 'tempfail', message: text, remote: this.route.host };
  }

  private send(pc: PooledConnection, job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    const host = this.route.host;
    const envelope = { from: job.sender, to: job.recipients.map((r) => r.recipient), size: job.size, use8BitMime: true };
    return new Promise((resolve) => {
      const body = job.body();
      pc.conn.send(envelope as never, body, (err: SmtpErrorLike | null, info?: { accepted?: string[]; rejectedErrors?: SmtpErrorLike[]; response?: string }) => {
        pc.sent++;
        body.destroy();
        const results = new Map<string, DeliveryResult>();
        if (err) {
          const perRcpt = new Map((err.rejectedErrors ?? []).map((e) => [e.recipient, e]));
          for (const r of job.recipients) results.set(r.envId, resultOf(perRcpt.get(r.recipient) ?? err, host));
          pc.broken = true; // the session state after a failed transaction is not worth trusting
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

  async close(): Promise<void> {
    for (const { pc, timer } of this.idle) {
      clearTimeout(timer);
      this.quit(pc);
    }
    this.idle = [];
  }
}

/** An SMTP error → result: 5xx is permanent, anything else (4xx, network) temporary. */
function resultOf(err: SmtpErrorLike, host: string): DeliveryResult {
  const text = (err.response ?? err.message).replace(/\s+/g, ' ').trim();
  const code = err.responseCode ?? 0;
  return { outcome: code >= 500 && code < 600 ? 'permfail' : 'tempfail', message: text, remote: host };
}
