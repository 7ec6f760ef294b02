// ~/.forward as the root helper reads it (src/privsep/forward.ts), on a real file in a home
// owned by whoever runs the test: a file that would make every RCPT expensive is ignored.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readForwardAsRoot } from '../../src/privsep/forward.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const home = tmpDir('tidemail-fwd-home-');
fs.chmodSync(home, 0o755);
const me = { name: 'someone', uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, home };
const forward = (text: string) => writeFile(path.join(home, '.forward'), text, 0o644);
const list = (n: number) => Array.from({ length: n }, (_, i) => `x${i}@elsewhere.example`).join('\n') + '\n';

test('more than 1000 targets, or more than 64 KiB, is ignored with the reason; 1000 are read', async () => {
  forward(list(1001));
  const many = await readForwardAsRoot(me);
  assert.is(many.kind, 'ignored');
  assert.match((many as { reason: string }).reason, /lists 1001 targets, more than 1000/);

  forward(list(1000));
  const ok = await readForwardAsRoot(me);
  assert.is(ok.kind, 'targets');
  assert.is((ok as { targets: string[] }).targets.length, 1000);

  // Before: up to 1 MiB (42,000 addresses) parsed as root at every RCPT to the user.
  forward(`# ${'x'.repeat(70 * 1024)}\nx@elsewhere.example\n`);
  const big = await readForwardAsRoot(me);
  assert.is(big.kind, 'ignored');
  assert.match((big as { reason: string }).reason, /larger than 64 KiB/);
});

test.run();
