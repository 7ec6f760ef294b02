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
  /** Interface on the namespace's side. */
  nsIf: string;
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
  return { ns, hostIf, hostIp, farIp, nsIf, teardown };
}

/**
 * Carrier loss as a DSL/LTE modem gives it: the far end goes away, our interface stays
 * administratively up and shows NO-CARRIER (operstate "lowerlayerdown"/"down").
 */
export function carrierDown(v: VethNamespace): void {
  ip('-n', v.ns, 'link', 'set', v.nsIf, 'down');
}

export function carrierUp(v: VethNamespace): void {
  ip('-n', v.ns, 'link', 'set', v.nsIf, 'up');
}

/** `ip link set IF down` on our side (what an admin or ifdown does). */
export function adminDown(v: VethNamespace): void {
  ip('link', 'set', v.hostIf, 'down');
}

export function adminUp(v: VethNamespace): void {
  ip('link', 'set', v.hostIf, 'up');
}

/** nftables in the namespace (this kernel may lack sch_netem, so loss is an nft `numgen` rule). */
export function canUseNft(v: VethNamespace): boolean {
  try {
    execFileSync('ip', ['netns', 'exec', v.ns, 'nft', 'list', 'tables'], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Drops `percent` % of the packets both ways at the namespace's end (0 removes the rule).
 * `percent` = 100 is a black hole: the link looks up, nothing gets through.
 */
export function setLoss(v: VethNamespace, percent: number): void {
  const nft = (...args: string[]) => execFileSync('ip', ['netns', 'exec', v.ns, 'nft', ...args], { stdio: 'pipe' });
  try { nft('delete', 'table', 'inet', 'tmloss'); } catch { /* not there yet */ }
  if (percent <= 0) return;
  const rule = percent >= 100 ? ['drop'] : ['numgen', 'random', 'mod', '100', '<', String(Math.round(percent)), 'drop'];
  nft('add', 'table', 'inet', 'tmloss');
  nft('add', 'chain', 'inet', 'tmloss', 'in', '{ type filter hook input priority 0; }');
  nft('add', 'chain', 'inet', 'tmloss', 'out', '{ type filter hook output priority 0; }');
  nft('add', 'rule', 'inet', 'tmloss', 'in', 'iifname', v.nsIf, ...rule);
  nft('add', 'rule', 'inet', 'tmloss', 'out', 'oifname', v.nsIf, ...rule);
}

/**
 * Counts TCP SYNs leaving on our side of the link to PORT (an nftables counter in this
 * namespace): connection attempts, including those a dead link swallows. `read()` gives the
 * count so far; `remove()` deletes the rule (safe to call twice).
 */
export function synCounter(v: VethNamespace, port: number): { read(): number; remove(): void } {
  const table = `tmsyn${process.pid}`;
  const nft = (...args: string[]) => execFileSync('nft', args, { stdio: 'pipe' }).toString();
  nft('add', 'table', 'inet', table);
  nft('add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0; }');
  nft('add', 'rule', 'inet', table, 'out', 'oifname', v.hostIf, 'tcp', 'dport', String(port), 'tcp', 'flags', '&', '(syn|ack)', '==', 'syn', 'counter');
  return {
    read: () => Number(/packets (\d+)/.exec(nft('list', 'table', 'inet', table))?.[1] ?? 0),
    remove: () => {
      try { nft('delete', 'table', 'inet', table); } catch { /* gone */ }
    },
  };
}
