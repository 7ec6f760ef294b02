// The listeners of one SMTP front: plain (port 25, submission with STARTTLS) and implicit TLS
// (smtps), plus sessions on an existing stream (inetd, `sendmail -bs`). The connection limits
// are counted here, over all listeners together: max_clients and, for untrusted clients,
// max_connections_per_ip. Shutdown ends idle sessions at once and gives running ones a grace
// period.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Connection } from './connection.js';
import { SmtpSession } from './session.js';
import type { TlsContext } from './tls-context.js';
import type { SessionHooks, SessionLimits } from './types.js';

/** How long a transaction under way at shutdown may take to finish. */
const SHUTDOWN_GRACE_MS = 30_000;
/** An implicit-TLS handshake gets at most this long (a client does it in well under a second). */
const HANDSHAKE_MAX_MS = 20_000;

export interface ListenOptions {
  host: string;
  port: number;
  limits: SessionLimits;
  hooks: SessionHooks;
  /** STARTTLS (plain listener) or the handshake (implicit); null: no TLS here. */
  tls: TlsContext | null;
  implicitTls: boolean;
}

export interface FrontLimits {
  maxClients: number;
  maxConnectionsPerIp: number;
  isTrusted(address: string): boolean;
}

/** "::ffff:192.0.2.1" (an IPv4 client of a dual-stack socket) → "192.0.2.1". */
export function plainRemote(address: string | undefined): string {
  const a = address ?? '';
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a.toLowerCase();
}

export class SmtpListeners {
  private readonly servers: net.Server[] = [];
  /** Every accepted socket, so that shutdown can end those still in a TLS handshake. */
  private readonly sockets = new Set<net.Socket>();
  private readonly connections = new Set<Connection>();
  private readonly perAddress = new Map<string, number>();
  /** Implicit-TLS sockets still in their handshake, by "address:port", with the client address. */
  private readonly handshaking = new Map<string, string>();
  private closing = false;

  constructor(private readonly limits: FrontLimits) {}

  /** Binds; rejects with the bind error (EADDRINUSE, EACCES) as node gives it. */
  listen(o: ListenOptions): Promise<void> {
    const server = o.implicitTls
      ? o.tls!.createServer(Math.min(o.limits.commandTimeoutMs, HANDSHAKE_MAX_MS), (s) => this.accept(s, o, true))
      // Half-open: a client that shuts down its side after pipelining still gets its replies.
      : net.createServer({ allowHalfOpen: true }, (s) => this.accept(s, o, false));
    // A handshake that fails (scanners, garbage) ends that socket only.
    server.on('tlsClientError', (_err: Error, s: Duplex) => s.destroy());
    server.on('connection', (raw: net.Socket) => {
      // An implicit-TLS socket is a session only after its handshake; until then it counts
      // against the limits here, or a peer could hold any number of sockets (and fds) open
      // by never finishing one. It cannot be told why in clear: it is closed.
      if (o.implicitTls && !this.admitHandshake(raw)) return void raw.destroy();
      this.sockets.add(raw);
      raw.once('close', () => this.sockets.delete(raw));
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port, o.host, () => {
        server.off('error', reject);
        server.on('error', (err: Error) => o.hooks.onError?.(err));
        this.servers.push(server);
        resolve();
      });
    });
  }

  /** One session on a stream that is already connected; resolves when it is over. */
  serveStream(stream: Duplex, remoteAddress: string, limits: SessionLimits, hooks: SessionHooks): Promise<void> {
    return new Promise((resolve) => {
      stream.once('close', () => resolve());
      stream.once('end', () => resolve());
      const c = new SmtpSession(stream, remoteAddress, false, { limits, hooks, trusted: true, tls: null, gone: () => undefined });
      c.start();
    });
  }

  /** Counts an implicit-TLS socket in its handshake; false when it would go over a limit. */
  private admitHandshake(raw: net.Socket): boolean {
    const address = plainRemote(raw.remoteAddress);
    if (this.closing || !address) return false;
    if (this.connections.size + this.handshaking.size >= this.limits.maxClients) return false;
    if (!this.limits.isTrusted(address)) {
      let same = this.perAddress.get(address) ?? 0;
      for (const a of this.handshaking.values()) if (a === address) same++;
      if (same >= this.limits.maxConnectionsPerIp) return false;
    }
    const key = `${raw.remoteAddress}:${raw.remotePort}`;
    this.handshaking.set(key, address);
    raw.once('close', () => this.handshaking.delete(key));
    return true;
  }

  private accept(socket: net.Socket, o: ListenOptions, secure: boolean): void {
    if (secure) this.handshaking.delete(`${socket.remoteAddress}:${socket.remotePort}`);
    const address = plainRemote(socket.remoteAddress);
    if (this.closing || !address) return void socket.destroy();
    const trusted = this.limits.isTrusted(address);
    const c = new SmtpSession(socket, address, secure, { limits: o.limits, hooks: o.hooks, trusted, tls: o.tls, gone: (x) => this.gone(x, address) });
    if (this.connections.size >= this.limits.maxClients) {
      return c.refuse('421 4.7.0 Too many connected clients, try again in a moment\r\n');
    }
    const same = this.perAddress.get(address) ?? 0;
    if (!trusted && same >= this.limits.maxConnectionsPerIp) {
      return c.refuse(`421 4.7.0 Too many connections from your address (at most ${this.limits.maxConnectionsPerIp}), try again later\r\n`);
    }
    this.connections.add(c);
    this.perAddress.set(address, same + 1);
    c.start();
  }

  private gone(c: Connection, address: string): void {
    if (!this.connections.delete(c)) return;
    const n = (this.perAddress.get(address) ?? 1) - 1;
    if (n > 0) this.perAddress.set(address, n);
    else this.perAddress.delete(address);
    if (this.closing && this.connections.size === 0) this.allGone?.();
  }

  private allGone: (() => void) | null = null;

  /** Stops listening; idle sessions get 421 now, the others when done or after the grace period. */
  async close(): Promise<void> {
    this.closing = true;
    const closed = Promise.all(this.servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    if (this.connections.size) {
      const gone = new Promise<void>((r) => (this.allGone = r));
      for (const c of this.connections) c.shutdown(false);
      const timer = setTimeout(() => {
        for (const c of this.connections) c.shutdown(true);
      }, SHUTDOWN_GRACE_MS);
      timer.unref();
      await gone;
      clearTimeout(timer);
    }
    // Left: sockets still in an implicit-TLS handshake (no session yet), or closing.
    for (const raw of this.sockets) raw.destroy();
    await closed;
  }
}
