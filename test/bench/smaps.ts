// Memory of a process as the kernel splits it (/proc/<pid>/smaps), for the bench's memory block
// (issue 17). VmRSS alone mixes three things: node's own binary pages (clean, file-backed,
// shared with every node process on the machine), pages only this process holds (USS =
// Private_Clean + Private_Dirty: what stopping it gives back) and its share of pages it shares
// (PSS). The privsep helper is a second node process the daemon starts; it is read the same way.

import fs from 'node:fs';
import { descendants } from './common.js';

export interface SmapsMem {
  rssKiB: number;
  pssKiB: number;
  /** USS: Private_Clean + Private_Dirty */
  privateKiB: number;
  privateDirtyKiB: number;
  anonKiB: number;
  /** RSS of the mappings of the node executable itself (its .text, .rodata, ...) */
  nodeBinaryKiB: number;
}

/** Sums /proc/<pid>/smaps; null when the process is gone or not readable (other uid, not root). */
export function readSmaps(pid: number): SmapsMem | null {
  let text: string;
  let exe: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
    exe = fs.readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
  return parseSmaps(text, exe);
}

/** The parse of readSmaps: `exe` is the path whose mappings count as the node binary. */
export function parseSmaps(text: string, exe: string): SmapsMem {
  const m: SmapsMem = { rssKiB: 0, pssKiB: 0, privateKiB: 0, privateDirtyKiB: 0, anonKiB: 0, nodeBinaryKiB: 0 };
  let inBinary = false;
  for (const line of text.split('\n')) {
    // A mapping's header: "start-end perms offset dev inode [path]"; its fields follow.
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (head) {
      inBinary = head[1] === exe;
      continue;
    }
    const f = /^(\w+):\s+(\d+) kB$/.exec(line);
    if (!f) continue;
    const kib = Number(f[2]);
    switch (f[1]) {
      case 'Rss': m.rssKiB += kib; if (inBinary) m.nodeBinaryKiB += kib; break;
      case 'Pss': m.pssKiB += kib; break;
      case 'Private_Clean': m.privateKiB += kib; break;
      case 'Private_Dirty': m.privateKiB += kib; m.privateDirtyKiB += kib; break;
      case 'Anonymous': m.anonKiB += kib; break;
    }
  }
  return m;
}

/** The daemon, its node children (the privsep helper) and the PSS of the whole tree. */
export interface TreeMem {
  daemon: SmapsMem;
  /** the privsep helper: the first descendant that runs privsep/helper */
  helper?: SmapsMem & { pid: number };
  /** PSS summed over the daemon and every descendant */
  treePssKiB: number;
  processes: number;
}

export function readTree(pid: number): TreeMem | null {
  const daemon = readSmaps(pid);
  if (!daemon) return null;
  let treePssKiB = daemon.pssKiB;
  let processes = 1;
  let helper: TreeMem['helper'];
  for (const kid of descendants(pid)) {
    const m = readSmaps(kid);
    if (!m) continue;
    treePssKiB += m.pssKiB;
    processes++;
    if (!helper && isHelper(kid)) helper = { ...m, pid: kid };
  }
  return { daemon, ...(helper ? { helper } : {}), treePssKiB, processes };
}

function isHelper(pid: number): boolean {
  try {
    return /privsep[/-]helper/.test(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
  } catch {
    return false;
  }
}
