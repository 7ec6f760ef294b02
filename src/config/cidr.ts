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

/** Parses "10.0.0.0/8", "::1/128" or a bare address; null when malformed. */
export function parseCidr(text: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const [address, prefixText] = text.trim().split('/');
  const family = net.isIPv4(address ?? '') ? 'ipv4' : net.isIPv6(address ?? '') ? 'ipv6' : null;
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
