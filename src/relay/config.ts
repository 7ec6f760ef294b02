// [relay]: domains we relay for without delivering them ourselves (Postfix's relay_domains and
// relay_recipient_maps): a backup MX for a family domain, or a LAN domain whose mail server sits
// behind us. Mail to them is accepted from anyone; everything else stays a closed relay.

import path from 'node:path';
import type { ConfigReader } from '../config/reader.js';

export interface RelayConfig {
  /** Lower-case domains, exact (a subdomain is its own entry, as with Postfix's parent_domain_matches_subdomains off). */
  domains: string[];
  /** Domain → the host to relay to instead of its MX records ([relay.next_hop]). */
  nextHops: Record<string, { host: string; port: number }>;
  /** Valid recipients (relay_recipient_maps); null: any address in a relay domain. */
  recipientsFile: string | null;
  /** file:line:col of `recipients`, for errors about the file. */
  recipientsWhere: string;
}

export const emptyRelay = (): RelayConfig => ({ domains: [], nextHops: {}, recipientsFile: null, recipientsWhere: 'relay.recipients' });

const DOMAIN = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$/;

export function loadRelay(top: ConfigReader, local: { domains: string[]; virtual: Record<string, unknown> }): RelayConfig {
  const r = top.sub('relay');
  const out = emptyRelay();
  const check = (key: string, d: string): string => {
    const dom = d.toLowerCase();
    if (!DOMAIN.test(dom)) r.fail(key, `entry "${d}" is not a domain name`, 'write domains without "@" or "*", e.g. domains = ["family.example"]');
    if (local.domains.includes(dom) || dom in local.virtual) {
      r.fail(key, `names ${dom}, which is also one of our own domains ([local] domains or virtual)`, `a domain is either delivered here ([local]) or relayed ([relay]): remove it from one of them`);
    }
    return dom;
  };
  out.domains = r.stringList('domains', []).map((d) => check('domains', d));
  const hops = r.sub('next_hop');
  for (const d of Object.keys(hops.table)) {
    const dom = check('next_hop', d);
    const text = hops.string(d)!;
    const hp = parseHostPort(text, 25);
    if (!hp) return hops.fail(d, `"${text}" is not HOST or HOST:PORT`, `write e.g. "${d}" = "mail.${dom}:25"`);
    out.nextHops[dom] = hp;
    // A next hop makes its domain a relay domain; listing it twice is not required.
    if (!out.domains.includes(dom)) out.domains.push(dom);
  }
  hops.rejectUnknown();
  const rcpts = r.string('recipients');
  if (rcpts !== undefined) {
    if (!out.domains.length) r.fail('recipients', 'is set but no relay domains are', 'add domains = ["family.example"] to [relay], or remove recipients');
    out.recipientsFile = path.resolve(path.dirname(r.file), rcpts);
    out.recipientsWhere = r.where('recipients');
  }
  r.rejectUnknown();
  return out;
}

/** The relay domain an address belongs to, or null. The part after the last @ decides, as for relay. */
export function relayDomainOf(relay: RelayConfig, address: string): string | null {
  const at = address.lastIndexOf('@');
  if (at < 0) return null;
  const d = address.slice(at + 1).toLowerCase();
  return relay.domains.includes(d) ? d : null;
}

/** "host", "host:port", "[v6]:port" (routes/load.ts has the same; not imported: config must not load routes). */
function parseHostPort(text: string, defaultPort: number): { host: string; port: number } | null {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:\s]+)(?::(\d+))?$/.exec(text);
  if (!m) return null;
  const port = m[2] ? Number(m[2]) : defaultPort;
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : null;
}
