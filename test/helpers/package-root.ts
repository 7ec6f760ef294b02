// A package root as installed (bin, dist/src, package.json, node_modules; no src/), with the
// bundle built in it (packaging/bundle.mjs) or not, for tests of what the launcher runs.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon.js';
import { tmpDir } from './tmp.js';

/** A package root as installed (bin, dist/src, package.json, node_modules; no src/), with the bundle built in it or not. */
export function packageRoot(withBundle: boolean): string {
  const root = tmpDir('tidemail-pkg-');
  fs.cpSync(path.join(REPO, 'bin'), path.join(root, 'bin'), { recursive: true });
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(root, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(root, 'package.json'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(root, 'node_modules'));
  if (withBundle) execFileSync(process.execPath, [path.join(REPO, 'packaging', 'bundle.mjs'), root], { stdio: ['ignore', 'ignore', 'pipe'] });
  return root;
}

/** The node flags on the launcher's #! line: how `sendmail` really starts (the code cache is made for them). */
export function launcherFlags(root: string): string[] {
  const words = fs.readFileSync(path.join(root, 'bin', 'tidemail.js'), 'utf8').split('\n', 1)[0]!.split(/\s+/);
  return words.slice(words.indexOf('node') + 1).filter((w) => w.startsWith('--'));
}
