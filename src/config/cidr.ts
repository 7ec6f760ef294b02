// Address lists (trusted_networks) on top of node:net's BlockList.

import net from 'node:net';

/** Strips the IPv4-mapped IPv6 prefix that dual-stack sockets report (::ffff:1.2.3.4). */
export function plainAddress(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
}

/**
 * The eight 16-bit groups of an IPv6 address as hex strings without leading zeros ("::" expanded,
 * an embedded IPv4 tail such as ::ffff:1.2.3.4 turned into two groups); null when not IPv6.
 */
export function ipv6Groups(address: string): string[] | null {
  if (!net.isIPv6(address)) return null;
  const [head = '', tail] = address.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const v4Tail = (t.at(-1) ?? h.at(-1) ?? '').includes('.') ? 1 : 0;
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length - v4Tail).fill('0'), ...t];
  return all.flatMap((g) => {
    if (!g.includes('.')) return [parseInt(g, 16).toString(16)];
    const b = g.split('.').map(Number);
    return [((b[0]! << 8) | b[1]!).toString(16), ((b[2]! << 8) | b[3]!).toString(16)];
  });
}

/** An IPv6 address's /64 ("2001:db8:1:2::/64"), the unit one customer usually gets. */
export function ipv6Network64(address: string): string | null {
  const g = ipv6Groups(address);
  return g ? g.slice(0, 4).join(':') + '::/64' : null;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
const V4_SEG = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const V4_TAIL = new RegExp(`^(?:${V4_SEG}\\.){3}${V4_SEG}$`);
const ZONE = /^[0-9a-zA-Z\-.:]+$/;

/**
 * net.isIPv6, answer for answer (test/config/cidr.test.ts compares them), without its one large
 * regular expression, which node compiles at the first call: ~5 ms of every command's config
 * load (`::1/128` is in the default trusted_networks; issue 17).
 */
export function isIPv6Text(s: string): boolean {
  const pct = s.indexOf('%');
  if (pct >= 0 && !ZONE.test(s.slice(pct + 1))) return false;
  const halves = (pct >= 0 ? s.slice(0, pct) : s).split('::');
  if (halves.length > 2) return false;
  const groups = (part: string) => (part === '' ? [] : part.split(':'));
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  const all = [...groups(halves[0]!), ...tail];
  let count = 0;
  for (let i = 0; i < all.length; i++) {
    if (HEX_GROUP.test(all[i]!)) count += 1;
    // An IPv4 tail counts as two groups; after "::" only when something follows it.
    else if (i === all.length - 1 && V4_TAIL.test(all[i]!) && (halves.length === 1 || tail.length > 0)) count += 2;
    else return false;
  }
  return halves.length === 2 ? count <= 7 : count === 8;
}

/**
 * net.isIPv4, answer for answer (test/config/cidr.test.ts): node:net is a few ms to load, and
 * `sendmail` needs no socket (issue 17).
 */
export function isIPv4Text(s: string): boolean {
  return V4_TAIL.test(s);
}

/** Parses "10.0.0.0/8", "::1/128" or a bare address; null when malformed. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address, prefixText] = text.trim().split('/');
  const family = isIPv4Text(address ?? '') ? 'ipv4' : isIPv6Text(address ?? '') ? 'ipv6' : null;
  if (!family || !address) return null;
  const max = family === 'ipv4' ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) return null;
  return { address, prefix, family };
}

/** Answers remembered per list: BlockList.check builds SocketAddress objects, and a session asks several times. */
const SEEN_MAX = 256;

export class NetworkList {
  private readonly list = new net.BlockList();
  private readonly seen = new Map<string, boolean>();
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const p = parseCidr(c);
      if (p) this.list.addSubnet(p.address, p.prefix, p.family);
    }
  }
  contains(address: string): boolean {
    const known = this.seen.get(address);
    if (known !== undefined) return known;
    const a = plainAddress(address);
    const yes = net.isIPv4(a) ? this.list.check(a, 'ipv4') : net.isIPv6(a) ? this.list.check(a, 'ipv6') : false;
    if (this.seen.size >= SEEN_MAX) this.seen.clear();
    this.seen.set(address, yes);
    return yes;
  }
}
