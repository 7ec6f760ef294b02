// Broken IPv6 as a laptop meets it: an IPv6 address that is routed (a veth into a network
// namespace, neighbour discovery works) but where every TCP packet is dropped by nftables, so a
// SYN to it is never answered. Needs root, iproute2 and nft; `null` when this machine can't.

import { execFileSync } from 'node:child_process';
import { canUseNetns, createVethNamespace, ip } from './netns.js';

export interface BlackHole {
  /** The IPv6 address that swallows every TCP connection attempt. */
  address: string;
  teardown(): void;
}

/** `tag` and `net` keep test files apart (interface names; the 10.<net>.x.y pair the veth gets). */
export function createIpv6BlackHole(tag: string, net: number): BlackHole | null {
  if (!canUseNetns()) return null;
  const v = createVethNamespace(tag, net);
  try {
    // fd00::/64 may be the machine's own network; a prefix of its own keeps clear of it.
    const prefix = `fd9e:${(process.pid % 0xffff).toString(16)}:${net.toString(16)}`;
    ip('-6', 'addr', 'add', `${prefix}::1/64`, 'dev', v.hostIf, 'nodad');
    ip('-6', '-n', v.ns, 'addr', 'add', `${prefix}::2/64`, 'dev', v.nsIf, 'nodad');
    const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', v.ns, 'nft', ...args], { stdio: 'pipe' });
    nft('add', 'table', 'inet', 'tmhole');
    nft('add', 'chain', 'inet', 'tmhole', 'in', '{ type filter hook input priority 0; }');
    nft('add', 'rule', 'inet', 'tmhole', 'in', 'meta', 'l4proto', 'tcp', 'drop');
    return { address: `${prefix}::2`, teardown: () => v.teardown() };
  } catch {
    v.teardown();
    return null;
  }
}
