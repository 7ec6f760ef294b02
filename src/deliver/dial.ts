// Opening the TCP connection to a smarthost or an MX ourselves, with Happy Eyeballs (RFC 8305):
// every address of the name (AAAA and A), IPv6 first and the families interleaved, attempts
// started `attemptDelayMs` apart (or at once when the one before fails) and raced — the first
// to connect wins, the others are destroyed. nodemailer resolves IPv4-first and never tries the
// other family; Node's autoSelectFamily gives up each attempt when it starts the next one, so
// an IPv6 SYN that is merely slow loses to one that never answers. Here a slow attempt keeps
// running until it connects, fails, or the connect timeout ends it.

import dns from 'node:dns/promises';
import net from 'node:net';

export interface DialOptions {
  /** Name or IP literal; the name is resolved unless `addresses` are given. */
  host: string;
  port: number;
  /** The addresses to race (e.g. an MX host's, already looked up); order is kept per family. */
  addresses?: string[];
  /** Bounds each attempt and the whole dial, lookup included. */
  connectTimeoutMs: number;
  /** RFC 8305's "Connection Attempt Delay"; 250 ms. */
  attemptDelayMs?: number;
  /**
   * Once every address has an attempt and none has connected, a fresh attempt to the oldest
   * running one after this long, at most twice (0: never); 500 ms. See race().
   */
  repeatDelayMs?: number;
  /** TCP keepalive idle time on the connected socket; 15 s. */
  keepAliveMs?: number;
  signal?: AbortSignal;
  /** Resolves a name to its addresses (both families); default dns.lookup (getaddrinfo). */
  resolver?: (name: string) => Promise<string[]>;
}

export const DEFAULT_ATTEMPT_DELAY_MS = 250;
export const DEFAULT_REPEAT_DELAY_MS = 500;
const MAX_REPEATS = 2;
export const DEFAULT_KEEPALIVE_MS = 15_000;

/** A dial that found no way through; `detail` is the per-address part of the message. */
export class DialError extends Error {
  readonly code = 'ECONNECTION';
  /** Every address failed at once with "no route" (EHOSTUNREACH, ENETUNREACH, ENETDOWN). */
  unreachable = false;
  constructor(readonly where: string, readonly detail: string) {
    super(`cannot connect to ${where}: ${detail}`);
  }
}

/** "smtp.example.net:587", "[2001:db8::1]:25". */
export function hostPortLabel(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** IPv6 first, then alternate families (RFC 8305 4); order within a family is kept. */
export function orderAddresses(addresses: readonly string[]): string[] {
  const unique = [...new Set(addresses)];
  const six = unique.filter((a) => net.isIPv6(a));
  const four = unique.filter((a) => !net.isIPv6(a));
  const out: string[] = [];
  for (let i = 0; i < Math.max(six.length, four.length); i++) {
    if (six[i]) out.push(six[i]!);
    if (four[i]) out.push(four[i]!);
  }
  return out;
}

async function systemLookup(name: string): Promise<string[]> {
  return (await dns.lookup(name, { all: true, verbatim: true })).map((a) => a.address);
}

export async function dial(o: DialOptions): Promise<net.Socket> {
  const where = hostPortLabel(o.host, o.port);
  const started = Date.now();
  const abortError = () => new DialError(where, 'aborted');
  if (o.signal?.aborted) throw abortError();
  let addresses = o.addresses?.length ? o.addresses : null;
  if (!addresses) {
    if (net.isIP(o.host)) addresses = [o.host];
    else {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      try {
        addresses = await Promise.race([
          (o.resolver ?? systemLookup)(o.host),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new DialError(where, `no address for ${o.host} within ${seconds(o.connectTimeoutMs)} s (connect_timeout)`)), o.connectTimeoutMs);
            onAbort = () => reject(abortError());
            o.signal?.addEventListener('abort', onAbort, { once: true });
          }),
        ]);
      } catch (err) {
        if (err instanceof DialError) throw err;
        const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
        throw new DialError(where, `${o.host} does not resolve (${code})`);
      } finally {
        clearTimeout(timer);
        if (onAbort) o.signal?.removeEventListener('abort', onAbort);
      }
      if (!addresses.length) throw new DialError(where, `${o.host} has no addresses`);
    }
  }
  // A link that has just come up may not route for a moment (the neighbour entry from before
  // the carrier loss still failed, a PPP/LTE bearer not ready): "unreachable" within the first
  // UNREACHABLE_SETTLE_MS is dialled again every UNREACHABLE_STEP_MS instead of failing the
  // delivery; after that it is the host's answer, as before.
  const order = orderAddresses(addresses);
  for (;;) {
    const remaining = o.connectTimeoutMs - (Date.now() - started);
    try {
      return await race(where, order, o.port, Math.max(1, remaining), o);
    } catch (err) {
      const settling = Date.now() - started + UNREACHABLE_STEP_MS < Math.min(UNREACHABLE_SETTLE_MS, o.connectTimeoutMs);
      if (!(err instanceof DialError) || !err.unreachable || !settling || !(await pause(UNREACHABLE_STEP_MS, o.signal))) throw err;
    }
  }
}

export const UNREACHABLE_SETTLE_MS = 2_000;
const UNREACHABLE_STEP_MS = 250;
const NO_ROUTE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN']);

/** false when aborted meanwhile. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(false);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve(ok);
    };
    const onAbort = () => done(false);
    const timer = setTimeout(() => done(true), ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Attempt {
  address: string;
  socket: net.Socket;
  startedAt: number;
  timer: NodeJS.Timeout;
  /** Why it failed; undefined while it runs. */
  failure?: string;
  /** The errno it failed with, if any. */
  code?: string;
}

/**
 * A lost SYN costs TCP a second, and a connection whose SYN (or SYN-ACK) was resent starts with
 * a 3 s retransmission timeout for its data (RFC 6298 5.7: no RTT sample) — on a lossy link that
 * is what made sessions miss short up-windows. So when no attempt has connected after
 * `repeatDelayMs`, a fresh attempt to the same address joins the race (at most MAX_REPEATS).
 * The losers are destroyed before they connect, so the server never sees a session.
 */
function race(where: string, order: string[], port: number, budgetMs: number, o: DialOptions): Promise<net.Socket> {
  const delay = o.attemptDelayMs ?? DEFAULT_ATTEMPT_DELAY_MS;
  const repeatDelay = o.repeatDelayMs ?? DEFAULT_REPEAT_DELAY_MS;
  return new Promise((resolve, reject) => {
    const attempts: Attempt[] = [];
    let next = 0;
    let repeats = 0;
    let settled = false;
    let stagger: NodeJS.Timeout | undefined;
    let repeater: NodeJS.Timeout | undefined;

    const finish = (winner: Attempt | null, err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(overall);
      clearTimeout(stagger);
      clearTimeout(repeater);
      o.signal?.removeEventListener('abort', onAbort);
      for (const a of attempts) {
        clearTimeout(a.timer);
        if (a !== winner) {
          a.socket.removeAllListeners('connect');
          a.socket.on('error', () => undefined); // a late error of a loser is nobody's business
          a.socket.destroy();
        }
      }
      if (!winner) return reject(err ?? summary());
      const s = winner.socket;
      s.removeAllListeners('error');
      s.removeAllListeners('connect');
      s.setKeepAlive(true, o.keepAliveMs ?? DEFAULT_KEEPALIVE_MS);
      s.setNoDelay(true);
      resolve(s);
    };

    const summary = () => {
      // One line per address: a repeated attempt says the same as the one before it.
      const tried = [...new Map(attempts.map((a) => [a.address, a])).values()].map((a) => `${a.address} ${a.failure ?? `timed out after ${seconds(Date.now() - a.startedAt)} s`}`);
      const untried = order.length - new Set(attempts.map((a) => a.address)).size;
      if (untried) tried.push(`${untried} more address(es) not tried within ${seconds(budgetMs)} s (connect_timeout)`);
      const e = new DialError(where, tried.join(', '));
      e.unreachable = !untried && attempts.length > 0 && attempts.every((a) => a.code !== undefined && NO_ROUTE.has(a.code));
      return e;
    };

    const failed = (a: Attempt, why: string) => {
      if (settled || a.failure) return;
      a.failure = why;
      clearTimeout(a.timer);
      a.socket.destroy();
      // RFC 8305 5: a failed attempt starts the next one at once instead of waiting out the delay.
      if (next < order.length) return start();
      if (attempts.every((x) => x.failure)) finish(null);
    };

    const start = (repeatOf?: string) => {
      clearTimeout(stagger);
      if (settled || (repeatOf === undefined && next >= order.length)) return;
      const address = repeatOf ?? order[next++]!;
      const socket = net.connect({ host: address, port });
      const a: Attempt = {
        address,
        socket,
        startedAt: Date.now(),
        timer: setTimeout(() => failed(a, `timed out after ${seconds(Date.now() - a.startedAt)} s`), budgetMs),
      };
      attempts.push(a);
      socket.once('connect', () => finish(a));
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (!a.failure) a.code = err.code;
        failed(a, reason(err));
      });
      if (next < order.length) stagger = setTimeout(start, delay);
      else if (repeatDelay > 0 && repeats < MAX_REPEATS) {
        clearTimeout(repeater);
        repeater = setTimeout(() => {
          const oldest = attempts.find((x) => !x.failure);
          if (!oldest || settled) return;
          repeats++;
          start(oldest.address);
        }, repeatDelay);
      }
    };

    const onAbort = () => finish(null, new DialError(where, 'aborted'));
    o.signal?.addEventListener('abort', onAbort, { once: true });
    const overall = setTimeout(() => finish(null), budgetMs);
    start();
  });
}

const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
  EADDRNOTAVAIL: 'no local address for this family',
};

function reason(err: NodeJS.ErrnoException): string {
  const code = err.code;
  if (!code) return err.message;
  return REASONS[code] ? `${REASONS[code]} (${code})` : code;
}

function seconds(ms: number): string {
  return ms >= 10_000 || ms % 1000 === 0 ? String(Math.round(ms / 1000)) : (ms / 1000).toFixed(1);
}
