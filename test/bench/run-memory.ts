// The smaps part of the bench's memory block (issue 17): for plain node, the idle daemon, its
// privsep helper and the pair after the load, RSS next to USS (what only that process holds)
// and PSS (its share of what it shares), and how much of the RSS is node's own binary. And the
// split of the idle figure that targets.ts's reason line states.

import { mem } from './run-context.js';
import type { SmapsMem, TreeMem } from './smaps.js';
import type { IdleSplit } from './targets.js';

const mb = (kib: number | undefined) => (kib === undefined ? '-' : (kib / 1024).toFixed(1));

export function smapsLines(): string[] {
  if (!mem.idleTree && !mem.nodeSmaps) return [];
  const rows = ['  from /proc/<pid>/smaps, MB:              RSS      USS      PSS  node binary (USS = Private_Clean + Private_Dirty)'];
  const row = (label: string, m: SmapsMem | undefined, extra = '') => {
    if (m) rows.push(`    ${label.padEnd(36)}${mb(m.rssKiB).padStart(6)}${mb(m.privateKiB).padStart(9)}${mb(m.pssKiB).padStart(9)}${mb(m.nodeBinaryKiB).padStart(13)}${extra}`);
  };
  const tree = (when: string, t: TreeMem | undefined) => {
    if (!t) return;
    row(`daemon ${when}`, t.daemon);
    if (t.helper) row(`privsep helper ${when}`, t.helper);
    else rows.push(`    privsep helper ${when}: not running (no local delivery as root)`);
    rows.push(`    PSS of the daemon's ${t.processes} process(es) ${when}`.padEnd(55) + mb(t.treePssKiB).padStart(9));
  };
  row('plain `node` idle (reference)', mem.nodeSmaps);
  tree('idle', mem.idleTree);
  tree('after the load', mem.afterTree);
  rows.push('    (PSS divides shared pages among every process mapping them, node\'s binary among all node processes on the machine: it moves with what else runs)');
  return rows;
}

/** The idle daemon's RSS split into node's binary pages and the rest, against plain node's. */
export function idleSplit(): IdleSplit | undefined {
  const t = mem.idleTree;
  const n = mem.nodeSmaps;
  if (!t || !n) return undefined;
  const m = (kib: number) => kib / 1024;
  return {
    rssMiB: m(t.daemon.rssKiB),
    binaryMiB: m(t.daemon.nodeBinaryKiB),
    ussMiB: m(t.daemon.privateKiB),
    node: { rssMiB: m(n.rssKiB), binaryMiB: m(n.nodeBinaryKiB), ussMiB: m(n.privateKiB) },
    ...(t.helper ? { helper: { rssMiB: m(t.helper.rssKiB), ussMiB: m(t.helper.privateKiB) } } : {}),
    treePssMiB: m(t.treePssKiB),
  };
}
