// MTA-STS (RFC 8461): a domain publishes `_mta-sts.DOMAIN` TXT "v=STSv1; id=…" and a policy at
// https://mta-sts.DOMAIN/.well-known/mta-sts.txt; in `enforce` mode we deliver only to MX hosts
// the policy lists, over STARTTLS with a certificate valid for the MX name.
//
// Policies are cached in memory for their max_age; the TXT record is asked on every delivery
// (one small query) so a changed id triggers a refetch. Nothing is persisted: after a restart the
// first delivery to a domain fetches again (RFC 8461 5.1 allows that; a disk cache would only
// matter against an attacker who can also block the fetch, and costs flash writes on a router).

import type { Resolver } from 'node:dns/promises';
import https from 'node:https';
import { log } from '../log/log.js';
import { dnsErrorText, dnsFailure, lookupVia } from './mx-dns.js';

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsPolicy {
  /** The TXT record's id this policy was fetched under. */
  id: string;
  mode: StsMode;
  /** MX patterns: "mx1.example.net" or "*.example.net" (one leftmost label). */
  mx: string[];
  maxAgeS: number;
}

export interface StsOptions {
  resolver: Resolver;
  /** Trust anchors for the policy fetch; undefined = Node's defaults. */
  ca?: (string | Buffer)[];
  /** 443 except in tests (TIDEMAIL_MTA_STS_PORT). */
  port: number;
  timeoutMs: number;
  now: () => number;
}

/** RFC 8461 3.2: max_age is at most 31557600 s (about a year). */
const MAX_AGE_LIMIT_S = 31_557_600;
/** RFC 8461 3.3: senders may limit the policy body to 64 KiB. */
const MAX_POLICY_BYTES = 64 * 1024;
/** Enough for every domain one small site writes to; the oldest entry goes first. */
const MAX_CACHED = 1000;
/** How long a failed policy fetch is not repeated (for the same record id). */
const FETCH_RETRY_MS = 10 * 60_000;

export interface StsPolicies {
  /**
   * The policy that applies to mail for `domain` now, or null when there is none (no TXT record,
   * no cached policy and the fetch failed, or mode none). Never throws: a failure to learn the
   * policy means "no policy" (RFC 8461 5), unless a cached one is still valid.
   */
  policyFor(domain: string): Promise<StsPolicy | null>;
}

export function createStsPolicies(o: StsOptions): StsPolicies {
  const cache = new Map<string, { policy: StsPolicy; expires: number }>();
  // A policy host that failed is not asked again for a while: each try can cost the whole
  // fetch timeout, and a delivery waits for it.
  const failed = new Map<string, { id: string; until: number }>();
  const lookup = lookupVia(o.resolver);

  async function current(domain: string): Promise<StsPolicy | null> {
    const now = o.now();
    const hit = cache.get(domain);
    const cached = hit && hit.expires > now ? hit.policy : null;
    let id: string | null;
    try {
      id = stsRecordId(await o.resolver.resolveTxt(`_mta-sts.${domain}`));
    } catch (err) {
      // RFC 8461 5.1: a missing or unreadable record does not end a cached policy early.
      if (dnsFailure(err) === 'temp') log.warn(null, 'mta-sts record lookup failed', { domain, error: dnsErrorText(err) });
      return cached;
    }
    if (id === null) return cached;
    if (cached && cached.id === id) return cached;
    const fail = failed.get(domain);
    if (fail && fail.id === id && fail.until > now) return cached;
    let policy: StsPolicy;
    try {
      policy = parseStsPolicy(await fetchPolicy(domain), id);
    } catch (err) {
      log.warn(null, 'mta-sts policy fetch failed', { domain, error: (err as Error).message, cached: cached ? cached.mode : 'none' });
      failed.delete(domain);
      failed.set(domain, { id, until: now + FETCH_RETRY_MS });
      if (failed.size > MAX_CACHED) failed.delete(failed.keys().next().value!);
      return cached;
    }
    failed.delete(domain);
    cache.delete(domain);
    cache.set(domain, { policy, expires: now + policy.maxAgeS * 1000 });
    if (cache.size > MAX_CACHED) cache.delete(cache.keys().next().value!);
    log.info(null, 'mta-sts policy', { domain, id, mode: policy.mode, mx: policy.mx.join(','), max_age: policy.maxAgeS });
    return policy;
  }

  function fetchPolicy(domain: string): Promise<string> {
    const host = `mta-sts.${domain}`;
    return new Promise((resolve, reject) => {
      const req = https.request(
        {
          host,
          port: o.port,
          path: '/.well-known/mta-sts.txt',
          method: 'GET',
          servername: host,
          ca: o.ca,
          lookup,
          agent: false,
          headers: { 'user-agent': 'tidemail' },
          signal: AbortSignal.timeout(o.timeoutMs),
        },
        (res) => {
          // RFC 8461 3.3: 200 only; redirects are not followed.
          if (res.statusCode !== 200) {
            res.resume();
            return reject(new Error(`https://${host}/.well-known/mta-sts.txt answered HTTP ${res.statusCode}`));
          }
          const type = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
          if (type !== 'text/plain') {
            res.resume();
            return reject(new Error(`policy has Content-Type "${type}", not text/plain`));
          }
          const parts: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            size += d.length;
            if (size > MAX_POLICY_BYTES) req.destroy(new Error(`policy is larger than ${MAX_POLICY_BYTES} bytes`));
            else parts.push(d);
          });
          res.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end();
    });
  }

  return { policyFor: (domain) => current(domain.toLowerCase()).then((p) => (p && p.mode !== 'none' ? p : null)) };
}

/** RFC 8461 3.1: the id of the one "v=STSv1" record; null when none or several (= no policy). */
export function stsRecordId(records: string[][]): string | null {
  const sts = records.map((chunks) => chunks.join('')).filter((t) => /^v=STSv1\s*(;|$)/.test(t));
  if (sts.length !== 1) return null;
  const fields = new Map<string, string>();
  for (const f of sts[0]!.split(';')) {
    const m = /^\s*([A-Za-z0-9_.-]+)=([\x21-\x3a\x3c\x3e-\x7e]*)\s*$/.exec(f);
    if (m) fields.set(m[1]!, m[2]!);
  }
  const id = fields.get('id');
  return id && /^[A-Za-z0-9]{1,32}$/.test(id) ? id : null;
}

/**
 * RFC 8461 3.2: "key: value" lines. Unknown keys are ignored.
 * @throws Error naming what is wrong with the policy.
 */
export function parseStsPolicy(text: string, id: string): StsPolicy {
  let version: string | undefined;
  let mode: string | undefined;
  let maxAge: string | undefined;
  const mx: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Za-z0-9_]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === 'version') version = value;
    else if (key === 'mode') mode = value;
    else if (key === 'max_age') maxAge = value;
    else if (key === 'mx') mx.push(value.toLowerCase().replace(/\.$/, ''));
  }
  if (version !== 'STSv1') throw new Error(`policy version is ${version ?? 'missing'}, not STSv1`);
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none') throw new Error(`policy mode is ${mode ?? 'missing'}`);
  if (!maxAge || !/^\d{1,10}$/.test(maxAge)) throw new Error(`policy max_age is ${maxAge ?? 'missing'}`);
  if (mode !== 'none' && !mx.length) throw new Error('policy lists no mx');
  return { id, mode, mx, maxAgeS: Math.min(Number(maxAge), MAX_AGE_LIMIT_S) };
}

/** RFC 8461 4.1: exact match, or "*.example.net" matching exactly one more leftmost label. */
export function stsMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (!p.startsWith('*.')) return h === p;
  const dot = h.indexOf('.');
  return dot > 0 && h.slice(dot + 1) === p.slice(2);
}
