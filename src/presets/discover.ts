// Finding the submission server for an address: RFC 6186 SRV records (RFC 8314 prefers implicit
// TLS, so `_submissions._tcp` before `_submission._tcp`), then the provider templates shipped in
// routes/ by the address's domain. `_pop3s._tcp` is looked up too, for presets that fetch mail.

import { promises as dnsPromises } from 'node:dns';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import type { TlsMode } from '../routes/profile.js';

export type ProviderName = 'gmail' | 'outlook' | 'fastmail';
export const PROVIDERS: readonly ProviderName[] = ['gmail', 'outlook', 'fastmail'];

/** Domains whose mail is hosted by a provider we ship a template for. */
const PROVIDER_DOMAINS: Record<string, ProviderName> = {
  'gmail.com': 'gmail',
  'googlemail.com': 'gmail',
  'outlook.com': 'outlook',
  'hotmail.com': 'outlook',
  'live.com': 'outlook',
  'msn.com': 'outlook',
  'fastmail.com': 'fastmail',
  'fastmail.fm': 'fastmail',
  'fastmail.net': 'fastmail',
  'fastmail.org': 'fastmail',
  'messagingengine.com': 'fastmail',
};

/** Their POP3 servers (the templates show fetching only as a commented-out example). */
const PROVIDER_POP3: Record<ProviderName, { host: string; port: number }> = {
  gmail: { host: 'pop.gmail.com', port: 995 },
  outlook: { host: 'outlook.office365.com', port: 995 },
  fastmail: { host: 'pop.fastmail.com', port: 995 },
};

/** Personal Microsoft accounts use another host and token endpoint than Microsoft 365. */
const OUTLOOK_CONSUMER_DOMAINS = new Set(['outlook.com', 'hotmail.com', 'live.com', 'msn.com']);

export interface ServerAddress {
  host: string;
  port: number;
  tls: TlsMode;
}

/** What a provider template says about its smarthost and login. */
export interface ProviderTemplate {
  name: ProviderName;
  file: string;
  smarthost: ServerAddress;
  oauth2?: { tokenUrl: string; scope?: string; mechanism: 'XOAUTH2' | 'OAUTHBEARER' };
  messagesPerConnection?: number;
  pop3?: { host: string; port: number };
}

export interface Discovery {
  /** How it was found, for the summary: "SRV _submissions._tcp.example.net", "template routes/gmail.toml". */
  source: string;
  smarthost: ServerAddress;
  provider?: ProviderName;
  pop3?: { host: string; port: number };
}

/** Where the provider templates live: next to the code (a clone or npm install), or the packages' copy. */
export function templateDirs(): string[] {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return [path.resolve(here, '../../../routes'), path.resolve(here, '../../routes'), '/usr/share/tidemail/routes'];
}

/** Reads routes/NAME.toml (the same file a user would copy by hand). */
export function loadProviderTemplate(name: ProviderName, domain?: string): ProviderTemplate {
  const file = templateDirs().map((d) => path.join(d, `${name}.toml`)).find((f) => fs.existsSync(f));
  if (!file) throw new Error(`the provider template ${name}.toml is not installed (looked in ${templateDirs().join(', ')})`);
  const t = parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  const tls = (t.tls as TlsMode | undefined) ?? 'starttls';
  const [host, port] = String(t.smarthost).split(':');
  const auth = (t.auth ?? {}) as { oauth2?: { token_url?: string; scope?: string; mechanism?: 'XOAUTH2' | 'OAUTHBEARER' } };
  const tpl: ProviderTemplate = {
    name,
    file,
    smarthost: { host: host!, port: Number(port ?? (tls === 'implicit' ? 465 : 587)), tls },
    messagesPerConnection: typeof t.messages_per_connection === 'number' ? t.messages_per_connection : undefined,
    pop3: PROVIDER_POP3[name],
  };
  if (auth.oauth2?.token_url) tpl.oauth2 = { tokenUrl: auth.oauth2.token_url, scope: auth.oauth2.scope, mechanism: auth.oauth2.mechanism ?? 'XOAUTH2' };
  const fetch = (t.fetch as { server?: string }[] | undefined)?.[0];
  if (fetch?.server) {
    const [ph, pp] = fetch.server.split(':');
    tpl.pop3 = { host: ph!, port: Number(pp ?? 995) };
  }
  // The template documents this variant in its comments; the domain decides it here.
  if (name === 'outlook' && domain && OUTLOOK_CONSUMER_DOMAINS.has(domain)) {
    tpl.smarthost = { ...tpl.smarthost, host: 'smtp-mail.outlook.com' };
    if (tpl.oauth2) tpl.oauth2 = { ...tpl.oauth2, tokenUrl: tpl.oauth2.tokenUrl.replace('/common/', '/consumers/') };
  }
  return tpl;
}

export function providerForDomain(domain: string): ProviderName | undefined {
  return PROVIDER_DOMAINS[domain.toLowerCase()];
}

/** A resolver that asks `server` ("HOST" or "HOST:PORT") instead of the system's, quickly giving up. */
function makeResolver(server?: string): dnsPromises.Resolver {
  const r = new dnsPromises.Resolver({ timeout: 3000, tries: 2 });
  if (server) r.setServers([server]);
  return r;
}

/** The best SRV target (lowest priority, then highest weight); null when absent or "." (RFC 2782: not offered). */
async function srv(resolver: dnsPromises.Resolver, name: string): Promise<{ host: string; port: number } | null> {
  let records: { name: string; port: number; priority: number; weight: number }[];
  try {
    records = await resolver.resolveSrv(name);
  } catch {
    return null; // NXDOMAIN, NODATA, timeout: nothing published
  }
  const best = records.filter((r) => r.name && r.name !== '.').sort((a, b) => a.priority - b.priority || b.weight - a.weight)[0];
  return best ? { host: best.name.replace(/\.$/, ''), port: best.port } : null;
}

/**
 * Finds the submission (and POP3) server for `address`.
 * @param dnsServer ask this DNS server ("127.0.0.1:5353") instead of the system's
 * @returns null when neither DNS nor a template knows the domain
 */
export async function discoverServers(address: string, dnsServer?: string): Promise<Discovery | null> {
  const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
  if (!domain || !address.includes('@')) return null;
  const resolver = makeResolver(dnsServer);
  const [submissions, submission, pop3s] = await Promise.all([
    srv(resolver, `_submissions._tcp.${domain}`),
    srv(resolver, `_submission._tcp.${domain}`),
    srv(resolver, `_pop3s._tcp.${domain}`),
  ]);
  if (submissions) return { source: `DNS SRV _submissions._tcp.${domain}`, smarthost: { ...submissions, tls: 'implicit' }, pop3: pop3s ?? undefined };
  if (submission) return { source: `DNS SRV _submission._tcp.${domain}`, smarthost: { ...submission, tls: 'starttls' }, pop3: pop3s ?? undefined };
  const provider = providerForDomain(domain);
  if (!provider) return null;
  const tpl = loadProviderTemplate(provider, domain);
  return { source: `provider template ${tpl.file}`, smarthost: tpl.smarthost, provider, pop3: pop3s ?? tpl.pop3 };
}
