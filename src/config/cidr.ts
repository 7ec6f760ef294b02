// Address lists (trusted_networks) on top of node:net's BlockList.

import net from 'node:net';

/** Strips the IPv4-mapped IPv6 prefix that dual-stack sockets report (::ffff:1.2.3.4). */
export function plainAddress(addr: string): string {
  return addr.startsWith('::ffff:') && net.isIPv4(addr.slice(7)) ? addr.slice(7) : addr;
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

export class NetworkList {
  private readonly list = new net.BlockList();
  constructor(cidrs: readonly string[]) {
    for (const c of cidrs) {
      const p = parseCidr(c);
      if (p) this.list.addSubnet(p.address, p.prefix, p.family);
    }
  }
  contains(address: string): boolean {
    const a = plainAddress(address);
    if (net.isIPv4(a)) return this.list.check(a, 'ipv4');
    if (net.isIPv6(a)) return this.list.check(a, 'ipv6');
    return false;
  }
}
