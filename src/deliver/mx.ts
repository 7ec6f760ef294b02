// Direct MX delivery: where does mail for a domain go? Our own MX lookup with node:dns
// (RFC 5321 5.1), MTA-STS (RFC 8461) where a domain publishes it, and the hops — one per MX
// host, its IPv6 and IPv4 addresses raced by dial() — that the SMTP transport tries in order.
//
// TLS: the route's policy (default "opportunistic": STARTTLS when offered, certificate not
// checked, plaintext again if the handshake fails — Postfix's "may") unless MTA-STS enforce
// says "required and verified against the MX name".
//
// Never to ourselves (RFC 5321 5.1, Postfix's "mail for X loops back to myself"): an MX host that
// is this machine — our host name, or an address and port we listen on — and every MX of equal
// or lower preference are dropped, so a backup MX hands mail only to better ones. When we are
// the best MX the mail is deferred with the fix, not bounced: it is a configuration mistake, and
// a backup MX exists to hold mail. [relay] next_hop names the host instead of the MX records.
//
// DANE (RFC 7672) is not done: it needs DNSSEC-validated TLSA answers, and node:dns (c-ares)
// neither validates nor shows the resolver's AD bit, so we could not tell a signed TLSA record
// from a forged one. A DANE-only domain gets opportunistic TLS (or its MTA-STS policy).

import { domainToASCII } from 'node:url';
import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Resolver } from 'node:dns/promises';
import { log } from '../log/log.js';
import { domainOf } from '../message/address.js';
import type { MxRoute } from '../routes/profile.js';
import { dnsErrorText, dnsFailure, makeResolver, resolveAddresses, shuffle } from './mx-dns.js';
import { createStsPolicies, stsMatches, type StsPolicies, type StsPolicy } from './mx-sts.js';
import type { SmtpHop } from './smtp.js';
import type { DeliveryJob, DeliveryResult } from './transport.js';

/** Addresses tried per delivery, over all MX hosts (Postfix: smtp_mx_address_limit 5). */
const MAX_HOPS = 10;
const STS_FETCH_TIMEOUT_MS = 20_000;

/** Finds the hops for one job's recipient domain. */
export interface MxLookup {
  /**
   * @returns the hops to try in order, or a DeliveryResult when there is nowhere to go:
   *   permfail for NXDOMAIN (5.1.2), null MX (5.1.10), no addresses (5.4.4) or a bad address
   *   literal; tempfail for any DNS failure that is not a final answer (4.4.3) and for an
   *   MTA-STS enforce policy that none of the MX hosts match (4.7.5).
   */
  hops(job: DeliveryJob): Promise<SmtpHop[] | DeliveryResult>;
}

/** Is an MX host this machine? (src/relay/self.ts builds it from the config.) */
export interface SelfCheck {
  /** Lower-case host names of this machine. */
  names: ReadonlySet<string>;
  /** An address we accept SMTP on at this port. */
  isOwnAddress(ip: string, port: number): boolean;
}

export function createMxLookup(route: MxRoute, self?: SelfCheck): MxLookup {
  // A configuration problem defers the mail with a clear reason; it is never the recipient's fault.
  const broken = (message: string): MxLookup => ({ hops: async () => tempfail(`4.3.5 route ${route.name}: ${message}`) });
  let resolver: Resolver;
  try {
    resolver = makeResolver(route.dnsServers);
  } catch (err) {
    return broken(`bad dns_servers ${JSON.stringify(route.dnsServers)}: ${(err as Error).message}`);
  }
  let extraCa: Buffer | undefined;
  try {
    extraCa = route.caFile ? fs.readFileSync(route.caFile) : undefined;
  } catch (err) {
    return broken(`cannot read tls_ca_file ${route.caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const sts = createStsPolicies({
    resolver,
    // tls_ca_file adds a trust anchor for the policy fetch; the public roots stay.
    ca: extraCa ? [...tls.rootCertificates, extraCa] : undefined,
    // Test hook: the policy host is fetched on this port instead of 443.
    port: Number(process.env['TIDEMAIL_MTA_STS_PORT']) || 443,
    timeoutMs: STS_FETCH_TIMEOUT_MS,
    now: Date.now,
  });
  if (route.nextHop) return { hops: (job) => nextHop(route, route.nextHop!, self, job) };
  return { hops: (job) => findHops(route, resolver, sts, job, self) };
}

interface Exchanger {
  name: string;
  preference: number;
}

const tempfail = (message: string): DeliveryResult => ({ outcome: 'tempfail', message });
const permfail = (message: string): DeliveryResult => ({ outcome: 'permfail', message });

async function findHops(route: MxRoute, resolver: Resolver, sts: StsPolicies, job: DeliveryJob, self?: SelfCheck): Promise<SmtpHop[] | DeliveryResult> {
  const raw = domainOf(job.recipients[0]!.recipient);
  if (raw.startsWith('[')) return literalHop(route, raw);
  // SMTPUTF8 domains are looked up in their A-label form.
  const domain = domainToASCII(raw);
  if (!domain) return permfail(`5.1.2 "${raw}" is not a valid domain name`);

  let exchangers: Exchanger[];
  try {
    const records = await resolver.resolveMx(domain);
    // RFC 7505: "0 ." alone means the domain takes no mail; a null MX beside real ones is noise.
    const real = records.filter((r) => r.exchange !== '' && r.exchange !== '.');
    if (!real.length) return permfail(`5.1.10 domain ${domain} does not accept mail (null MX)`);
    exchangers = byPreference(real.map((r) => ({ name: r.exchange.toLowerCase(), preference: r.priority })));
  } catch (err) {
    switch (dnsFailure(err)) {
      case 'nxdomain':
        return permfail(`5.1.2 domain ${domain} does not exist (NXDOMAIN)`);
      case 'nodata':
        // RFC 5321 5.1: no MX records — the domain itself is the implicit MX.
        exchangers = [{ name: domain, preference: 0 }];
        break;
      case 'temp':
        return tempfail(`4.4.3 MX lookup for ${domain} failed: ${dnsErrorText(err)}`);
    }
  }

  const policy = await sts.policyFor(domain);
  const enforce = policy?.mode === 'enforce';
  if (policy) {
    const allowed = exchangers.filter((e) => policy.mx.some((p) => stsMatches(p, e.name)));
    if (allowed.length < exchangers.length) {
      const refused = exchangers.filter((e) => !allowed.includes(e)).map((e) => e.name);
      log.warn(job.msgid, 'mx not in mta-sts policy', { domain, mode: policy.mode, mx: refused.join(','), policy: policy.mx.join(',') });
    }
    if (enforce) {
      // RFC 8461 5.1: no valid MX under an enforced policy is a temporary failure, never plaintext.
      if (!allowed.length) return tempfail(`4.7.5 no MX host of ${domain} matches its MTA-STS policy (mx: ${policy.mx.join(', ')})`);
      exchangers = allowed;
    }
  }

  return resolveHops(route, resolver, domain, exchangers, enforce ? policy : null, self);
}

/** [relay] next_hop: one named host (getaddrinfo, so /etc/hosts names work), never ourselves. */
async function nextHop(route: MxRoute, hop: { host: string; port: number }, self: SelfCheck | undefined, job: DeliveryJob): Promise<SmtpHop[] | DeliveryResult> {
  let addresses: string[];
  try {
    addresses = net.isIP(hop.host) ? [hop.host] : (await dns.promises.lookup(hop.host, { all: true })).map((a) => a.address);
  } catch (err) {
    return tempfail(`4.4.3 cannot resolve next hop ${hop.host}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const domain = domainOf(job.recipients[0]!.recipient);
  if (self && (self.names.has(hop.host.toLowerCase()) || addresses.some((a) => self.isOwnAddress(a, hop.port)))) {
    return tempfail(`4.4.6 mail for ${domain} loops back to myself: next hop ${hop.host}:${hop.port} is this machine (fix [relay] next_hop, or add ${domain} to [local] domains to deliver it here)`);
  }
  const one = addresses.length === 1 ? addresses[0] : undefined;
  return [{
    label: `${hop.host}[${addresses.join(',')}]:${hop.port}`,
    host: one ?? hop.host,
    port: hop.port,
    addresses,
    servername: net.isIP(hop.host) ? '' : hop.host,
  }];
}

/** Sorted by preference, equal preferences in random order (RFC 5321 5.1). */
function byPreference(list: Exchanger[]): Exchanger[] {
  return shuffle(list).sort((a, b) => a.preference - b.preference);
}

async function resolveHops(route: MxRoute, resolver: Resolver, domain: string, exchangers: Exchanger[], enforced: StsPolicy | null, self?: SelfCheck): Promise<SmtpHop[] | DeliveryResult> {
  let found = await Promise.all(exchangers.map((e) => resolveAddresses(resolver, e.name)));
  if (self) {
    // Us, and everything not better than us, is dropped: a backup MX sends only up the list.
    const mine = exchangers.findIndex((e, i) => self.names.has(e.name) || found[i]!.addresses.some((a) => self.isOwnAddress(a, route.port)));
    if (mine >= 0) {
      const ours = exchangers[mine]!;
      const better = exchangers.map((e, i) => [e, found[i]!] as const).filter(([e]) => e.preference < ours.preference);
      if (!better.length) {
        return tempfail(`4.4.6 mail for ${domain} loops back to myself: ${ours.name} (preference ${ours.preference}) is this machine and no MX host is preferred to it (add ${domain} to [local] domains to deliver it here, or give its primary MX a lower preference number)`);
      }
      exchangers = better.map(([e]) => e);
      found = better.map(([, f]) => f);
    }
  }
  const hops: SmtpHop[] = [];
  const temp: string[] = [];
  const missing: string[] = [];
  let budget = MAX_HOPS;
  found.forEach(({ addresses: all, tempError }, i) => {
    const name = exchangers[i]!.name;
    if (tempError && !all.length) temp.push(`${name} (${tempError})`);
    else if (!all.length) missing.push(name);
    const addresses = all.slice(0, budget);
    budget -= addresses.length;
    if (!addresses.length) return;
    // One hop per MX host: dial() races its IPv6 and IPv4 addresses (Happy Eyeballs) instead of
    // giving each a full connect timeout in turn.
    const one = addresses.length === 1 ? addresses[0] : undefined;
    hops.push({
      label: one ? `${name}[${one}]:${route.port}` : `${name}[${addresses.join(',')}]:${route.port}`,
      host: one ?? name,
      port: route.port,
      addresses,
      servername: name,
      // MTA-STS enforce: STARTTLS required, certificate valid for the MX name (RFC 8461 4.2).
      ...(enforced ? { tls: 'starttls' as const, tlsVerify: true } : {}),
    });
  });
  if (hops.length) return hops;
  if (temp.length) return tempfail(`4.4.3 cannot resolve the mail servers of ${domain}: ${temp.join(', ')}`);
  const implicit = exchangers.length === 1 && exchangers[0]!.name === domain;
  return permfail(implicit
    ? `5.4.4 domain ${domain} has no MX and no address records`
    : `5.4.4 the mail servers of ${domain} have no addresses: ${missing.join(', ')}`);
}

/** user@[192.0.2.1] and user@[IPv6:2001:db8::1]: no DNS, straight to the address. */
function literalHop(route: MxRoute, literal: string): SmtpHop[] | DeliveryResult {
  const inner = literal.slice(1, -1);
  const ip = /^ipv6:/i.test(inner) ? inner.slice(5) : inner;
  const family = net.isIP(ip);
  if (!literal.endsWith(']') || !family || (family === 6) !== /^ipv6:/i.test(inner)) {
    return permfail(`5.1.2 "${literal}" is not a valid address literal`);
  }
  // No name to check a certificate against (and SNI must not carry an IP address).
  return [{ label: `${literal}:${route.port}`, host: ip, port: route.port, servername: '' }];
}
