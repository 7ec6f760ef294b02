// Which file the delivery helper runs (issue 17): dist/bundle/privsep-helper.cjs, one CommonJS
// file that packaging/helper-bundle.mjs makes of helper.ts and what it imports, when it is there
// and not stale; else helper.js beside this file, as tsc writes it. The helper is a second node
// process for as long as the daemon runs; as ES modules it pays node's ES-module loader and a
// record per module (1.1 MB private, 1.9 MB RSS more than the bundle, measured 2026-12-03).

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/src/privsep, also from the daemon's bundle

/**
 * The helper's entry under `privsepDir` (a dist/src/privsep directory). As the launcher judges
 * its bundle: in a checkout (src/ beside dist/), a bundle older than the helper tsc wrote is
 * stale and dist/src runs; an installed package has no src/, so its bundle always runs.
 */
export function helperEntry(privsepDir = HERE): string {
  const root = path.resolve(privsepDir, '..', '..', '..');
  const own = path.join(privsepDir, 'helper.js');
  const bundle = path.join(root, 'dist', 'bundle', 'privsep-helper.cjs');
  const mtime = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.mtimeMs;
  const bundled = mtime(bundle);
  if (bundled === undefined) return own;
  const checkout = mtime(path.join(root, 'src', 'privsep', 'helper.ts')) !== undefined;
  return checkout && bundled < (mtime(own) ?? 0) ? own : bundle;
}
