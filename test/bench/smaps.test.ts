// smaps.ts: the sums the bench's memory block reports, from a real process's /proc/<pid>/smaps
// and from a fixed excerpt whose figures are known.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSmaps, readSmaps } from './smaps.js';

const EXCERPT = `55d0a0000000-55d0a1a00000 r-xp 00000000 fd:01 1234   /usr/bin/node
Size:              26624 kB
Rss:               21000 kB
Pss:                4000 kB
Private_Clean:         0 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
55d0a2000000-55d0a2100000 rw-p 00000000 00:00 0      [heap]
Rss:                3500 kB
Pss:                3500 kB
Private_Clean:         0 kB
Private_Dirty:      3500 kB
Anonymous:          3500 kB
7f0000000000-7f0000200000 r-xp 00000000 fd:01 99     /lib/node_sqlite3.node
Rss:                1600 kB
Pss:                1600 kB
Private_Clean:      1600 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
`;

test('sums RSS, PSS, USS (private clean + dirty), anonymous, and the node binary\'s own pages', () => {
  assert.equal(parseSmaps(EXCERPT, '/usr/bin/node'), {
    rssKiB: 26100, pssKiB: 9100, privateKiB: 5100, privateDirtyKiB: 3500, anonKiB: 3500, nodeBinaryKiB: 21000,
  });
});

test('reads this very process: the node binary is part of its RSS, USS and PSS within it', () => {
  const m = readSmaps(process.pid);
  assert.ok(m, 'own smaps readable');
  assert.ok(m!.nodeBinaryKiB > 1000 && m!.nodeBinaryKiB < m!.rssKiB, JSON.stringify(m));
  assert.ok(m!.privateKiB > 0 && m!.privateKiB <= m!.rssKiB && m!.pssKiB <= m!.rssKiB, JSON.stringify(m));
  assert.is(readSmaps(2 ** 22 + 12345), null, 'no such process');
});

test.run();
