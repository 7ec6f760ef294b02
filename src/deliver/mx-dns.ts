// DNS for direct MX delivery: one node:dns Resolver per MX route (its own servers when the
// route names them), address lookups that keep "no such name" apart from "could not ask", and a
// `lookup` function so other sockets (the MTA-STS policy fetch) resolve through the same servers.

import { Resolver } from 'node:dns/promises';
import type { LookupAddress, LookupOptions } from 'node:dns';
import net from 'node:net';

/** Per query try; c-ares tries each server `DNS_TRIES` times before giving up. */
const DNS_TIMEOUT_MS = 5_000;
const DNS_TRIES = 2;

/**
 * A resolver that asks `servers` ("host", "host:port", "[v6]:port") or, when empty, the
 * system's servers from /etc/resolv.conf.
 * @throws Error when a server entry is malformed (from Resolver.setServers).
 */
export function makeResolver(servers: readonly string[]): Resolver {
  const r = new Resolver({ timeout: DNS_TIMEOUT_MS, tries: DNS_TRIES });
  if (servers.length) r.setServers([...servers]);
  return r;
}

/**
 * How a failed query ends: `nxdomain` (the name does not exist — a final answer), `nodata` (the
 * name exists without records of this type — final too), or `temp` for everything that only
 * says we could not get an answer (SERVFAIL, timeout, refused, no network). A `temp` failure
 * must never bounce mail: on a box whose link just dropped, every lookup fails that way.
 */
export type DnsFailure = 'nxdomain' | 'nodata' | 'temp';

export function dnsFailure(err: unknown): DnsFailure {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOTFOUND') return 'nxdomain';
  if (code === 'ENODATA') return 'nodata';
  return 'temp';
}

/** "ESERVFAIL" etc.; the message when there is no code. */
export function dnsErrorText(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

export interface Addresses {
  /** IPv6 and IPv4 addresses interleaved, IPv6 first (RFC 8305 4). */
  addresses: string[];
  /** Both families answered "no such name". */
  nxdomain: boolean;
  /** The error code of a lookup that failed temporarily, if any. */
  tempError?: string;
}

/** AAAA and A records of `name` (a literal IP is its own address). */
export async function resolveAddresses(resolver: Resolver, name: string): Promise<Addresses> {
  if (net.isIP(name)) return { addresses: [name], nxdomain: false };
  const [v6, v4] = await Promise.allSettled([resolver.resolve6(name), resolver.resolve4(name)]);
  let tempError: string | undefined;
  let nx = 0;
  const take = (r: PromiseSettledResult<string[]>): string[] => {
    if (r.status === 'fulfilled') return shuffle(r.value);
    const kind = dnsFailure(r.reason);
    if (kind === 'temp') tempError ??= dnsErrorText(r.reason);
    if (kind === 'nxdomain') nx++;
    return [];
  };
  const six = take(v6);
  const four = take(v4);
  const addresses: string[] = [];
  for (let i = 0; i < Math.max(six.length, four.length); i++) {
    if (six[i]) addresses.push(six[i]!);
    if (four[i]) addresses.push(four[i]!);
  }
  return { addresses, nxdomain: nx === 2, tempError };
}

/** Name → addresses (both families) through `servers`, for dial(); a failure carries the DNS code. */
export function addressResolver(servers: readonly string[]): (name: string) => Promise<string[]> {
  let resolver: Resolver | undefined;
  return async (name) => {
    resolver ??= makeResolver(servers);
    const { addresses, nxdomain, tempError } = await resolveAddresses(resolver, name);
    if (!addresses.length) throw Object.assign(new Error(`cannot resolve ${name}`), { code: nxdomain ? 'ENOTFOUND' : tempError ?? 'ENODATA' });
    return addresses;
  };
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A `lookup` for net/tls/https that resolves through `resolver` instead of getaddrinfo. */
export function lookupVia(resolver: Resolver) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolveAddresses(resolver, hostname).then(({ addresses, tempError }) => {
      const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : 0;
      const usable = addresses.filter((a) => !family || net.isIP(a) === family);
      if (!usable.length) {
        const code = tempError ?? 'ENOTFOUND';
        return callback(Object.assign(new Error(`cannot resolve ${hostname}: ${code}`), { code, hostname }), '', 0);
      }
      if (options.all) return callback(null, usable.map((address) => ({ address, family: net.isIP(address) })));
      callback(null, usable[0]!, net.isIP(usable[0]!));
    }, (err: NodeJS.ErrnoException) => callback(err, '', 0));
  };
}

/** Fisher–Yates, on a copy. */
export function shuffle<T>(items: readonly T[]): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}
