// DNS block lists (RFC 5782): the client's address, reversed, is looked up under each zone; an
// A record in 127.0.0.0/8 means "listed". Each zone has a weight; the client is refused when the
// weights of the zones that list it reach `threshold`. Also the lookup machinery for dnswl.ts.
//
// A list we cannot ask (timeout, SERVFAIL, a "you are over quota" answer) never refuses mail:
// a broken DNS must not turn into a mail outage. Answers are cached in memory for their TTL.

import net from 'node:net';
import type { Resolver } from 'node:dns/promises';
import type { ConfigReader } from '../config/reader.js';
import { ipv6Groups, plainAddress } from '../config/cidr.js';
import { log } from '../log/log.js';
import { localPartOf } from '../message/address.js';
import type { Check, CheckContext, Phase, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';

export interface DnsListZone {
  zone: string;
  weight: number;
}

/** One zone's answer for one address: the 127.x codes it returned (empty = not listed). */
interface CacheEntry {
  codes: string[];
  expires: number;
}

export interface DnsListOptions {
  zones: DnsListZone[];
  /** `ip` or `ip:port` / `[v6]:port`; empty = the system resolver's servers. */
  servers: string[];
  /** Per-try timeout (ms); node:dns tries twice. */
  timeoutMs: number;
  /** Cache answers at least / at most this long, whatever their TTL; "not listed" for minTtl. */
  minTtlMs: number;
  maxTtlMs: number;
}

export interface DnsListResult {
  /** Zones that list the address, with the codes they answered. */
  listed: { zone: string; weight: number; codes: string[] }[];
  weight: number;
}

/** The query name for an address under a zone: 192.0.2.1 → 1.2.0.192.zone; IPv6 by nibbles. */
export function reversedName(address: string, zone: string): string | null {
  const a = plainAddress(address);
  if (net.isIPv4(a)) return `${a.split('.').reverse().join('.')}.${zone}`;
  if (!net.isIPv6(a)) return null;
  const groups = ipv6Groups(a)!;
  const hex = groups.map((g) => g.padStart(4, '0')).join('');
  return `${[...hex].reverse().join('.')}.${zone}`;
}

/** Answers that are a list telling us it refused the query, not a listing (Spamhaus, DNSWL.org). */
function isQueryRefusal(code: string): boolean {
  return code.startsWith('127.255.255.') || code === '127.0.0.255';
}

/** Looks addresses up in a set of DNS lists, with an in-memory cache. */
export class DnsLists {
  private resolver: Resolver | null = null;
  private readonly cache = new Map<string, CacheEntry>();

  constructor(
    readonly name: string,
    private readonly opts: DnsListOptions,
  ) {}

  private async getResolver(): Promise<Resolver> {
    if (!this.resolver) {
      // Loaded on first use: a config without DNS lists never pays for it.
      const { Resolver } = await import('node:dns/promises');
      const r = new Resolver({ timeout: this.opts.timeoutMs, tries: 2 });
      if (this.opts.servers.length) r.setServers(this.opts.servers);
      this.resolver = r;
    }
    return this.resolver;
  }

  /** The codes one zone answers for one name; null when the list could not be asked. */
  private async queryZone(qname: string, logId: string | null): Promise<string[] | null> {
    const now = Date.now();
    const hit = this.cache.get(qname);
    if (hit && hit.expires > now) return hit.codes;
    const resolver = await this.getResolver();
    let codes: string[];
    let ttlMs = this.opts.minTtlMs;
    try {
      const answers = await resolver.resolve4(qname, { ttl: true });
      codes = answers.map((a) => a.address);
      const ttl = Math.min(...answers.map((a) => a.ttl)) * 1000;
      ttlMs = Math.min(Math.max(ttl, this.opts.minTtlMs), this.opts.maxTtlMs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTFOUND' || code === 'ENODATA') {
        codes = [];
      } else {
        log.warn(logId, `${this.name}: lookup failed, skipped`, { query: qname, error: code ?? (err as Error).message });
        return null;
      }
    }
    if (codes.some(isQueryRefusal)) {
      // Not cached: the list refuses our resolver (public resolver, quota), which may change.
      log.warn(logId, `${this.name}: the list refused the query, skipped`, { query: qname, answer: codes.join(',') });
      return null;
    }
    // Only 127.0.0.0/8 answers are listings (RFC 5782 §2.1); anything else is a misconfigured or
    // wildcarded zone, e.g. an expired list domain answering for everything.
    codes = codes.filter((c) => c.startsWith('127.'));
    if (this.cache.size >= 10_000) this.sweep(now);
    this.cache.set(qname, { codes, expires: now + ttlMs });
    return codes;
  }

  private sweep(now: number): void {
    for (const [k, v] of this.cache) if (v.expires <= now) this.cache.delete(k);
    if (this.cache.size >= 10_000) this.cache.clear();
  }

  /** Asks every zone at once; zones that could not be asked count as not listing. */
  async lookup(address: string, logId: string | null = null): Promise<DnsListResult> {
    const answers = await Promise.all(
      this.opts.zones.map(async (z) => {
        const qname = reversedName(address, z.zone);
        return { ...z, codes: qname ? await this.queryZone(qname, logId) : null };
      }),
    );
    const listed = answers.filter((a) => a.codes && a.codes.length).map((a) => ({ zone: a.zone, weight: a.weight, codes: a.codes! }));
    return { listed, weight: listed.reduce((s, z) => s + z.weight, 0) };
  }
}

/** Reads `zones = ["zen.spamhaus.org", "bl.example=2"]` and the resolver options. */
export function readDnsListOptions(o: ConfigReader, example: string): DnsListOptions {
  const zones = o.stringList('zones', []).map((text): DnsListZone => {
    const m = /^\s*([A-Za-z0-9_.-]+?)\.?\s*(?:=\s*(-?\d+)\s*)?$/.exec(text);
    if (!m || !m[1]!.includes('.')) o.fail('zones', `has "${text}", which is not ZONE or ZONE=WEIGHT`, `write e.g. zones = ["${example}", "list.example=2"]`);
    return { zone: m[1]!.toLowerCase(), weight: m[2] === undefined ? 1 : Number(m[2]) };
  });
  if (!zones.length) o.fail('zones', 'is empty or missing: there is no list to ask', `write e.g. zones = ["${example}"]`);
  const servers = o.stringList('servers', []);
  for (const s of servers) {
    const host = /^\[([^\]]+)\](?::\d+)?$/.exec(s)?.[1] ?? (net.isIPv6(s) ? s : s.replace(/:\d+$/, ''));
    if (!net.isIP(host)) o.fail('servers', `has "${s}", which is not an IP address (optionally with :port)`, 'write e.g. servers = ["127.0.0.1", "[::1]:5353"]');
  }
  const opts: DnsListOptions = {
    zones,
    servers,
    timeoutMs: o.duration('timeout', 3000),
    minTtlMs: o.duration('min_ttl', 60_000),
    maxTtlMs: o.duration('max_ttl', 3_600_000),
  };
  if (opts.timeoutMs < 1) o.fail('timeout', 'must be longer than 0', 'write e.g. timeout = "3s"');
  if (opts.maxTtlMs < opts.minTtlMs) o.fail('max_ttl', 'is shorter than min_ttl', 'make max_ttl at least as long as min_ttl');
  return opts;
}

/** RFC 5321 §4.5.1: postmaster must be reachable, also for a listed client that wants off the list. */
function isPostmaster(recipient: string | undefined): boolean {
  return !!recipient && ['postmaster', 'abuse'].includes(localPartOf(recipient).toLowerCase());
}

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const lists = new DnsLists('dnsbl', readDnsListOptions(o, 'zen.spamhaus.org'));
  const threshold = o.integer('threshold', 1, 1);
  o.rejectUnknown();
  return {
    name: 'dnsbl',
    phases: ['connect', 'rcpt'],
    async run(phase: Phase, ctx: CheckContext): Promise<Verdict> {
      // Our own clients are not judged by public lists (a laptop on a listed dial-up range).
      if (ctx.trusted || ctx.authUser) return NEXT;
      if (phase === 'rcpt' && isPostmaster(ctx.recipient)) return NEXT;
      const r = await lists.lookup(ctx.clientAddress, ctx.queueId ?? null);
      if (!r.listed.length) return NEXT;
      const zones = r.listed.map((z) => z.zone).join(', ');
      if (r.weight < threshold) {
        log.info(ctx.queueId ?? null, 'dnsbl: listed below threshold', { client: ctx.clientAddress, zones, weight: r.weight, threshold });
        return NEXT;
      }
      log.info(ctx.queueId ?? null, 'dnsbl: refused', { client: ctx.clientAddress, zones, weight: r.weight, phase });
      return { action: 'reject', code: 554, enhanced: '5.7.1', text: `Service unavailable; client [${plainAddress(ctx.clientAddress)}] listed by ${zones}` };
    },
  };
}
