// Probes for a site that sends and receives mail on the Internet itself (an `mx` route, the
// internet-site preset): the hostname's A/AAAA and PTR agree (forward-confirmed reverse DNS),
// each mail domain's MX points here, its SPF record allows our addresses, its DKIM key is
// published and matches the key file we sign with, DMARC is published, an MTA-STS policy (when
// announced) lists us, and port 25 outbound is not blocked. DANE needs DNSSEC validation, which
// Node's resolver cannot do, so it is not checked.
//
// DNS goes through node:dns with the servers given by --dns-server or the mx route's
// dns_servers (tests use a local responder), else the system's.

import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Resolver } from 'node:dns/promises';
import type { Config } from '../config/schema.js';
import { makeResolver } from '../deliver/mx-dns.js';
import { createStsPolicies, stsMatches, stsRecordId } from '../deliver/mx-sts.js';
import type { MxRoute, RouteProfile } from '../routes/profile.js';
import { fail, ok, skip, warn, type Finding } from './finding.js';
import type { LinkAnswer } from './links.js';

export interface DnsProbeOptions {
  /** DNS servers to ask ("127.0.0.1:5353"); default: the mx route's, else the system's. */
  servers?: string[];
  /** Mail domains to check; default: [local] domains that look public, plus DKIM key domains. */
  domains?: string[];
  /** Whose MX to connect to for the port 25 test (default gmail.com). */
  port25Domain?: string;
}

interface DkimKey {
  domain: string;
  selector: string;
  file: string;
}

const PRIVATE_SUFFIXES = ['localhost', 'arpa', 'local', 'lan', 'home', 'internal', 'localdomain', 'invalid'];
const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');
const code = (err: unknown) => (err as NodeJS.ErrnoException).code ?? (err as Error).message;
const missing = (err: unknown) => code(err) === 'ENOTFOUND' || code(err) === 'ENODATA';

/**
 * An mx route that only takes recipients in private domains (*.home.arpa, *.lan — masqmail's
 * local_nets as import-masqmail converts them): direct delivery on the LAN. Receivers there do
 * not look at our PTR, SPF or DMARC, and port 25 to the Internet does not matter, so such a
 * route does not make this an Internet site.
 */
export function isLanOnlyMx(r: RouteProfile): boolean {
  if (r.kind !== 'mx' || !r.recipients.length) return false;
  return r.recipients.every((p) => {
    const d = p.includes('@') ? p.slice(p.lastIndexOf('@') + 1) : p.includes('.') || p.includes('*') ? p : '';
    const name = norm(d).replace(/^\*\.?/, '');
    return name !== '' && !name.includes('*') && PRIVATE_SUFFIXES.some((s) => name === s || name.endsWith('.' + s));
  });
}

/** The dkim-sign check's keys ([checks.dkim-sign] selector + keys = { domain = file }). */
function dkimKeys(config: Config): DkimKey[] {
  const o = config.checks.options('dkim-sign');
  const keys = o.table.keys;
  if (!keys || typeof keys !== 'object' || Array.isArray(keys)) return [];
  const selector = typeof o.table.selector === 'string' ? o.table.selector : 'tidemail';
  return Object.entries(keys as Record<string, unknown>)
    .filter((e): e is [string, string] => typeof e[1] === 'string')
    .map(([domain, file]) => ({ domain: norm(domain), selector, file: path.resolve(config.configDir ?? '/', file) }));
}

function mailDomains(config: Config, keys: DkimKey[]): string[] {
  const host = norm(config.hostname);
  const pub = config.local.domains.map(norm).filter((d) => d.includes('.') && d !== host && !PRIVATE_SUFFIXES.some((s) => d === s || d.endsWith('.' + s)));
  const all = [...new Set([...pub, ...keys.map((k) => k.domain)])];
  return all.length ? all : [host];
}

async function txt(r: Resolver, name: string): Promise<string[]> {
  return (await r.resolveTxt(name)).map((chunks) => chunks.join(''));
}

/** p= of a DKIM key record, as our key files produce it (RFC 6376 3.6.1; Ed25519: RFC 8463). */
function publicKeyTag(file: string): { p: string; k: string } {
  const pub = crypto.createPublicKey(crypto.createPrivateKey(fs.readFileSync(file)));
  const spki = pub.export({ type: 'spki', format: 'der' });
  const k = pub.asymmetricKeyType === 'ed25519' ? 'ed25519' : 'rsa';
  return { p: (k === 'ed25519' ? spki.subarray(spki.length - 32) : spki).toString('base64'), k };
}

function tags(record: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const part of record.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) m.set(part.slice(0, i).trim(), part.slice(i + 1).replace(/\s+/g, ''));
  }
  return m;
}

export async function probeDns(config: Config, routes: readonly RouteProfile[], links: readonly LinkAnswer[], opts: DnsProbeOptions = {}): Promise<Finding[]> {
  const mx = routes.find((r): r is MxRoute => r.kind === 'mx' && !isLanOnlyMx(r));
  const keys = dkimKeys(config);
  if (!mx && !keys.length && !opts.domains) return [];
  const anyOnline = links.some((l) => l.online);
  if (!anyOnline && !opts.servers) return [skip('dns', 'no route is online: DNS records not checked')];
  const resolver = makeResolver(opts.servers ?? mx?.dnsServers ?? []);
  const domains = opts.domains?.map(norm) ?? mailDomains(config, keys);
  const out: Finding[] = [];
  const host = norm(config.hostname);

  // Our addresses: what the hostname resolves to. Receivers compare them with PTR and SPF.
  let ips: string[] = [];
  if (mx) {
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    ips = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (!ips.length) {
      out.push(fail(`dns ${host}`, `hostname ${host} has no A or AAAA record`, `publish ${host} IN A <this machine's public address>, or set hostname to the name that has it`));
    } else out.push(ok(`dns ${host}`, `${host} has address ${ips.join(', ')}`));
    for (const ip of ips) {
      try {
        const names = (await resolver.reverse(ip)).map(norm);
        if (names.includes(host)) out.push(ok(`dns ${host}`, `PTR of ${ip} is ${host}`));
        else out.push(fail(`dns ${host}`, `PTR of ${ip} is ${names.join(', ') || 'empty'}, not ${host}: many receivers refuse such mail`, `ask whoever owns ${ip} (your ISP or host) to set its reverse DNS to ${host}, or set hostname = "${names[0]}"`));
      } catch (err) {
        out.push(fail(`dns ${host}`, `${ip} has no PTR record (${code(err)}): many receivers refuse mail from it`, `ask whoever owns ${ip} (your ISP or host) to set its reverse DNS to ${host}`));
      }
    }
  }

  for (const d of domains) {
    const area = `dns ${d}`;
    if (mx) {
      out.push(await checkMx(resolver, d, host, ips, area));
      out.push(...(await checkSpf(resolver, d, host, ips, area)));
      out.push(await checkDmarc(resolver, d, area));
      out.push(await checkMtaSts(resolver, d, host, area));
    }
    for (const k of keys.filter((k) => k.domain === d)) out.push(await checkDkim(resolver, k, area));
  }
  if (mx) out.push(await checkPort25(resolver, mx, links, opts.port25Domain ?? 'gmail.com'));
  return out;
}

async function checkMx(r: Resolver, d: string, host: string, ips: string[], area: string): Promise<Finding> {
  try {
    const mxs = (await r.resolveMx(d)).sort((a, b) => a.priority - b.priority);
    const names = mxs.map((m) => norm(m.exchange));
    if (names.includes(host)) return ok(area, `MX ${names.join(', ')} includes ${host}`);
    for (const n of names) {
      const addrs = await r.resolve4(n).catch(() => [] as string[]);
      if (addrs.some((a) => ips.includes(a))) return ok(area, `MX ${n} points at this host (${addrs.join(', ')})`);
    }
    return warn(area, `MX of ${d} is ${names.join(', ')}, not this host (${host}): mail for ${d} is received elsewhere`, `if this host should receive it: ${d} IN MX 10 ${host}.`);
  } catch (err) {
    if (missing(err)) return warn(area, `${d} has no MX record`, `publish ${d} IN MX 10 ${host}.`);
    return warn(area, `MX lookup for ${d} failed: ${code(err)}`, 'check this machine\'s DNS, then run check again');
  }
}

async function checkSpf(r: Resolver, d: string, host: string, ips: string[], area: string): Promise<Finding[]> {
  const example = `${d} IN TXT "v=spf1 mx a:${host} -all"`;
  let records: string[];
  try {
    records = (await txt(r, d)).filter((t) => /^v=spf1(\s|$)/i.test(t));
  } catch (err) {
    if (!missing(err)) return [warn(area, `SPF lookup for ${d} failed: ${code(err)}`, "check this machine's DNS, then run check again")];
    records = [];
  }
  if (!records.length) return [fail(area, `${d} publishes no SPF record: receivers cannot tell our mail from forgeries`, `publish ${example}`)];
  if (records.length > 1) return [fail(area, `${d} publishes ${records.length} SPF records (a permanent error for receivers)`, 'merge them into one v=spf1 record')];
  if (!ips.length) return [ok(area, `SPF record present: ${records[0]}`)];
  const { spf } = (await import('mailauth/lib/spf/index.js')) as unknown as { spf: (o: object) => Promise<{ status: { result: string; comment?: string } }> };
  const resolver = (name: string, type: string) => r.resolve(name, type as 'TXT') as Promise<unknown>;
  const out: Finding[] = [];
  for (const ip of ips) {
    const res = await spf({ sender: `postmaster@${d}`, ip, helo: host, mta: host, resolver });
    const result = res.status.result;
    if (result === 'pass') out.push(ok(area, `SPF allows ${ip}`));
    else out.push(fail(area, `SPF of ${d} gives "${result}" for ${ip}${res.status.comment ? ` (${res.status.comment})` : ''}`,
      `add ${net.isIPv6(ip) ? 'ip6' : 'ip4'}:${ip} (or a:${host}) to ${d}'s record: ${records[0]}`));
  }
  return out;
}

async function checkDkim(r: Resolver, k: DkimKey, area: string): Promise<Finding> {
  const name = `${k.selector}._domainkey.${k.domain}`;
  let mine: { p: string; k: string };
  try {
    mine = publicKeyTag(k.file);
  } catch (err) {
    return fail(area, `cannot read the DKIM key ${k.file}: ${code(err)}`, `make one: tidemail dkim keygen ${k.domain}`);
  }
  const want = `${name} IN TXT "v=DKIM1; k=${mine.k}; p=${mine.p}"`;
  let records: string[];
  try {
    records = (await txt(r, name)).filter((t) => /(^|;)\s*p=/.test(t));
  } catch (err) {
    if (!missing(err)) return warn(area, `DKIM lookup for ${name} failed: ${code(err)}`, "check this machine's DNS, then run check again");
    records = [];
  }
  if (!records.length) return fail(area, `DKIM key ${name} is not published: receivers cannot verify our signatures`, `publish ${want}`);
  const p = tags(records[0]!).get('p') ?? '';
  if (!p) return fail(area, `DKIM key ${name} is revoked (empty p=)`, `publish ${want}`);
  if (p !== mine.p) return fail(area, `DKIM key ${name} in DNS is not the key in ${k.file}: signatures will fail`, `publish ${want} (or point [checks.dkim-sign] keys at the matching file)`);
  return ok(area, `DKIM key ${name} published and matches ${k.file}`);
}

async function checkDmarc(r: Resolver, d: string, area: string): Promise<Finding> {
  const fix = `publish _dmarc.${d} IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@${d}" (then tighten p= to quarantine or reject)`;
  try {
    const rec = (await txt(r, `_dmarc.${d}`)).find((t) => /^v=DMARC1\s*(;|$)/i.test(t));
    if (!rec) return warn(area, `no DMARC record at _dmarc.${d}`, fix);
    return ok(area, `DMARC published (p=${tags(rec).get('p') ?? '?'})`);
  } catch (err) {
    if (missing(err)) return warn(area, `no DMARC record at _dmarc.${d}`, fix);
    return warn(area, `DMARC lookup for ${d} failed: ${code(err)}`, "check this machine's DNS, then run check again");
  }
}

async function checkMtaSts(r: Resolver, d: string, host: string, area: string): Promise<Finding> {
  let records: string[][];
  try {
    records = await r.resolveTxt(`_mta-sts.${d}`);
  } catch (err) {
    if (missing(err)) return ok(area, 'MTA-STS not used (no _mta-sts record)');
    return warn(area, `MTA-STS lookup for ${d} failed: ${code(err)}`, "check this machine's DNS, then run check again");
  }
  const id = stsRecordId(records);
  if (!id) return fail(area, `_mta-sts.${d} is not one valid "v=STSv1; id=…" record: senders ignore it`, `publish exactly one: _mta-sts.${d} IN TXT "v=STSv1; id=20260101"`);
  const policy = await createStsPolicies({ resolver: r, port: Number(process.env['TIDEMAIL_MTA_STS_PORT']) || 443, timeoutMs: 10_000, now: Date.now }).policyFor(d);
  if (!policy) return fail(area, `MTA-STS is announced but https://mta-sts.${d}/.well-known/mta-sts.txt could not be fetched`, `serve the policy there with a valid certificate, or remove _mta-sts.${d}`);
  if (policy.mode !== 'none' && !policy.mx.some((p) => stsMatches(p, host))) {
    return fail(area, `MTA-STS policy (mode ${policy.mode}) does not list ${host}`, `add "mx: ${host}" to the policy and change the id in _mta-sts.${d}`);
  }
  return ok(area, `MTA-STS policy mode ${policy.mode} lists this host`);
}

/** Port 25 outbound: connect to a big provider's MX and wait for its greeting. */
async function checkPort25(r: Resolver, route: MxRoute, links: readonly LinkAnswer[], domain: string): Promise<Finding> {
  const area = 'port 25 out';
  if (!links.find((l) => l.route === route.name)?.online) return skip(area, `route ${route.name} is offline: not probed`);
  let target: string;
  try {
    target = norm((await r.resolveMx(domain)).sort((a, b) => a.priority - b.priority)[0]!.exchange);
  } catch (err) {
    return warn(area, `cannot find the MX of ${domain} to test with: ${code(err)}`, "check this machine's DNS, then run check again");
  }
  const addr = await r.resolve4(target).then((a) => a[0]).catch(() => undefined);
  if (!addr) return warn(area, `cannot resolve ${target} to test with`, "check this machine's DNS, then run check again");
  const result = await new Promise<string | null>((resolve) => {
    const sock = net.createConnection({ host: addr, port: route.port });
    const done = (v: string | null) => {
      sock.destroy();
      resolve(v);
    };
    sock.setTimeout(10_000, () => done('no answer within 10s'));
    sock.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    sock.once('data', (d) => done(d.toString('latin1').startsWith('220') ? null : `unexpected greeting: ${d.toString('latin1').slice(0, 60).trim()}`));
  });
  if (result === null) return ok(area, `${target} (${addr}) port ${route.port} answers: outbound SMTP is not blocked`);
  return fail(area, `cannot reach ${target} (${addr}) on port ${route.port}: ${result}`,
    `many ISPs block outbound port 25: ask yours to open it, or send through a smarthost route on port 587 instead of kind = "mx"`);
}
