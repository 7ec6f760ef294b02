// Loads dist/bundle/sendmail.cjs (src/sendmail-main.ts bundled by packaging/bundle.mjs) with
// V8's code cache: the launcher uses it for `sendmail`, where compiling our code is a good part
// of the start-up (issue 17). The cache is made at build time by the same node binary and
// flags (bundle.mjs runs the launcher's shebang flags) and only read here, never written: a
// cache V8 rejects (another node version or V8 flags) or a missing one just means compiling.
//
// V8 itself checks the cache's version, flags and the source's *length*, not its content, so
// each cache names the bundle it was made for: both start with the same line, the bundle's
// content hash, and a cache of another build is not used.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import vm from 'node:vm';

export type CodeCacheUse = 'used' | 'rejected' | 'none';

export interface SendmailBundle {
  sendmailMain(argv: string[]): Promise<number | null>;
  /** What became of the code cache (for the tests). */
  cache: CodeCacheUse;
}

/** The cache file beside a bundle. */
export function codeCachePath(bundleFile: string): string {
  return `${bundleFile}.cache`;
}

/**
 * The name the bundle has in stack traces. A fixed one: V8 gives a script compiled from a cache
 * the name it was made under (the build's directory), so the real path would show only when
 * there is no cache.
 */
export const BUNDLE_SCRIPT_NAME = 'tidemail/dist/bundle/sendmail.cjs';

type SendmailExports = { sendmailMain: SendmailBundle['sendmailMain'] };

/** Compiles and runs the bundle's source (also packaging/sendmail-bundle.mjs's training run, which makes the cache from `script`). */
export function runSendmailBundle(file: string, source: string, cachedData?: Buffer): { script: vm.Script; exports: SendmailExports } {
  // The bundle is one function expression (exports, require, module, __filename, __dirname), as sendmail-bundle.mjs wraps it.
  const script = new vm.Script(source, { filename: BUNDLE_SCRIPT_NAME, cachedData });
  const module = { exports: {} as SendmailExports };
  (script.runInThisContext() as (...a: unknown[]) => void)(module.exports, createRequire(file), module, file, path.dirname(file));
  return { script, exports: module.exports };
}

/** The bundle's exports, or null when there is no bundle. */
export function loadSendmailBundle(file: string): SendmailBundle | null {
  let source: string;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  const cachedData = cacheFor(source, codeCachePath(file));
  const { script, exports } = runSendmailBundle(file, source, cachedData);
  return { sendmailMain: exports.sendmailMain, cache: !cachedData ? 'none' : script.cachedDataRejected ? 'rejected' : 'used' };
}

function cacheFor(source: string, cacheFile: string): Buffer | undefined {
  let data: Buffer;
  try {
    data = fs.readFileSync(cacheFile);
  } catch {
    return undefined;
  }
  const id = source.slice(0, source.indexOf('\n') + 1);
  if (!id || data.length <= id.length || data.toString('latin1', 0, id.length) !== id) return undefined;
  return data.subarray(id.length);
}
