// The connection pool of one SMTP destination (a route, or an MX domain): at most
// max_connections sessions at once, finished sessions kept idle for IDLE_CLOSE_MS so the next
// message skips connect, greeting and EHLO, and at most messages_per_connection per session.

import type { Socket } from 'node:net';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { ReplyDeadlines } from './smtp-deadline.js';
import type { SmtpHop } from './smtp.js';

export interface PooledConnection {
  conn: SMTPConnection;
  deadlines: ReplyDeadlines;
  hop: SmtpHop;
  sent: number;
  broken: boolean;
  /** Set up with the stall hedge on (smtp-deadline.ts StallHedge): its replies are hedged too. */
  hedged: boolean;
  /** The stall hedge cut it (smtp-deadline.ts HEDGE_CODE): the delivery gets one more round. */
  stalled?: boolean;
  /** The last transaction ended with the server's reply (not a network error). */
  answered?: boolean;
}

const IDLE_CLOSE_MS = 5_000;

export class ConnectionPool {
  private idle: { pc: PooledConnection; timer: NodeJS.Timeout }[] = [];
  private active = 0;
  /** Each takes the slot and says true, or says false when its link went down meanwhile. */
  private waiters: (() => boolean)[] = [];

  constructor(private readonly maxConnections: number, private readonly messagesPerConnection: number) {}

  /** A slot of the pool; false when the link went down while waiting for one. */
  slot(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return Promise.resolve(false);
    if (this.active < this.maxConnections) {
      this.active++;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const waiter = () => {
        signal.removeEventListener('abort', giveUp);
        // Woken by a session cut at the same link-down, before its own abort listener ran.
        if (signal.aborted) {
          resolve(false);
          return false;
        }
        this.active++;
        resolve(true);
        return true;
      };
      const giveUp = () => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      };
      signal.addEventListener('abort', giveUp, { once: true });
      this.waiters.push(waiter);
    });
  }

  takeIdle(): PooledConnection | undefined {
    for (let e = this.idle.pop(); e; e = this.idle.pop()) {
      clearTimeout(e.timer);
      if (!e.pc.broken) return e.pc;
    }
    return undefined;
  }

  /** Gives the slot back; the connection goes idle, or is ended when broken or used up. */
  release(pc: PooledConnection | undefined): void {
    this.active--;
    if (pc) this.keep(pc);
    for (let w = this.waiters.shift(); w && !w(); w = this.waiters.shift());
  }

  /**
   * A session set up beside the one a delivery used (a raced connection, smtp.ts) and ready
   * after it: kept idle for the next message, which then skips the set-up. It holds no slot.
   */
  offerIdle(pc: PooledConnection): void {
    this.keep(pc);
  }

  private keep(pc: PooledConnection): void {
    if (pc.broken || pc.sent >= this.messagesPerConnection) return quit(pc);
    const timer = setTimeout(() => {
      this.idle = this.idle.filter((e) => e.pc !== pc);
      quit(pc);
    }, IDLE_CLOSE_MS);
    timer.unref();
    this.idle.push({ pc, timer });
  }

  /** Forgets the idle sessions: marked broken (link down, they are dead) or ended politely. */
  dropIdle(how: 'broken' | 'quit'): void {
    for (const { pc, timer } of this.idle) {
      clearTimeout(timer);
      if (how === 'broken') pc.broken = true;
      else quit(pc);
    }
    this.idle = [];
  }
}

export function quit(pc: PooledConnection): void {
  try {
    pc.conn.quit();
  } catch {
    pc.conn.close();
  }
}

/** The TCP socket under each connection we dialled (under TLS, `_socket` is the TLS one). */
const tcpOf = new WeakMap<SMTPConnection, Socket>();

export function rememberTcp(conn: SMTPConnection, tcp: Socket): void {
  tcpOf.set(conn, tcp);
}

export function tcpSocketOf(conn: SMTPConnection): Socket | undefined {
  return tcpOf.get(conn);
}

/**
 * Drops a connection without a word to the peer (a dead link, or a session not worth ending
 * politely) — with a reset: a plain close() lets the kernel go on sending what is still in the
 * socket's buffer once the link is back, and a message we are about to send again could then
 * be completed at the server from the old session (a duplicate the link-flap bench saw).
 */
export function destroyConnection(conn: SMTPConnection): void {
  const socket = (conn as unknown as { _socket?: { destroy(): void } })._socket;
  resetTcp(conn);
  try {
    socket?.destroy();
    conn.close();
  } catch {
    // already gone
  }
}

/** Resets the TCP connection under `conn` (see destroyConnection); nodemailer learns it as an error. */
export function resetTcp(conn: SMTPConnection): void {
  const tcp = tcpOf.get(conn);
  try {
    if (tcp && !tcp.destroyed) tcp.resetAndDestroy();
  } catch {
    // not connected any more: a plain destroy is all there is to do
  }
}
