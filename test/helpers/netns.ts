// A network namespace joined to this one by a veth pair: the far side of a link (a smarthost
// behind an interface that goes up and down) or a client with a really foreign address.
// Needs root and iproute2 (CI runs as root); `canUseNetns()` says whether this machine can.

import { execFileSync } from 'node:child_process';
import { isRoot } from './tmp.js';

export const ip = (...args: string[]): Buffer => execFileSync('ip', args, { stdio: 'pipe' });

export function canUseNetns(): boolean {
  if (!isRoot()) return false;
  try {
    ip('-V');
    return true;
  } catch {
    return false;
  }
}

export interface VethNamespace {
  /** Namespace name, for `ip netns exec NAME …`. */
  ns: string;
  /** Interface on our side, and its address. */
  hostIf: string;
  hostIp: string;
  /** Address of the namespace's end. */
  farIp: string;
  /** Removes the pair and the namespace (safe to call twice). */
  teardown(): void;
}

/**
 * Creates namespace + veth pair with 10.<net>.<pid-derived>.1 here and .2 there; `tag` keeps the
 * interface names of different test files apart (kernel limit: 15 characters).
 */
export function createVethNamespace(tag: string, net: number): VethNamespace {
  const n = process.pid % 200;
  const ns = `tm${tag}ns${process.pid}`;
  const hostIf = `tm${tag}h${process.pid % 100000}`;
  const nsIf = `tm${tag}n${process.pid % 100000}`;
  const hostIp = `10.${net}.${n}.1`;
  const farIp = `10.${net}.${n}.2`;
  const teardown = () => {
    try { ip('link', 'del', hostIf); } catch { /* gone with the namespace */ }
    try { ip('netns', 'del', ns); } catch { /* gone already */ }
  };
  ip('netns', 'add', ns);
  try {
    ip('link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf);
    ip('link', 'set', nsIf, 'netns', ns);
    ip('addr', 'add', `${hostIp}/24`, 'dev', hostIf);
    ip('-n', ns, 'addr', 'add', `${farIp}/24`, 'dev', nsIf);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'link', 'set', nsIf, 'up');
    ip('link', 'set', hostIf, 'up');
  } catch (err) {
    teardown();
    throw err;
  }
  return { ns, hostIf, hostIp, farIp, teardown };
}
