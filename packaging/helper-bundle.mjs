// dist/bundle/privsep-helper.cjs (issue 17), for packaging/bundle.mjs: the privileged delivery
// helper (src/privsep/helper.ts) and what it imports, in one CommonJS file.
//
// The helper is a second node process, root, for as long as the daemon runs, and mostly idle.
// Run from dist/src it loads node's ES-module loader and links ~10 modules: 7.3 MB private,
// 42.8 MB RSS; this file: 6.2 MB private (a bare node's), 40.9 MB RSS (2026-12-03, idle + 2 s).
// src/privsep/helper-entry.ts picks it (or dist/src when it is stale). Node flags did not pay
// (RESULTS.md): the helper is forked with none.
//
// Only node builtins stay outside: the helper loads no npm package, and one that crept in would
// be code running as root that nobody meant to be there, so it is an error here. The per-delivery
// child (as-user.js) still runs from dist/src: it is short-lived and drops root before it loads
// anything of ours.

import fs from 'node:fs';
import path from 'node:path';
import * as esbuild from 'esbuild';
// helper.ts finds as-user.js beside itself: its import.meta.url must be its dist/src URL.
import { ownUrlInCjs } from './sendmail-bundle.mjs';

export async function buildHelperBundle({ root, src, outDir }) {
  const file = path.join(outDir, 'privsep-helper.cjs');
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [path.join(src, 'privsep', 'helper.js')],
    outfile: file,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    minify: false,
    sourcemap: false,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
    // Outside esbuild's scope, where `require` and `__dirname` are node's own.
    banner: { js: 'var __ownUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__dirname, rel)).href;' },
    plugins: [builtinsOnly, ownUrlInCjs(src, outDir)],
  });
  const modules = Object.keys(result.metafile.inputs).length;
  return `privsep-helper.cjs ${(fs.statSync(file).size / 1024).toFixed(0)} KiB (${modules} modules)`;
}

const builtinsOnly = {
  name: 'builtins-only',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => (args.path.startsWith('node:')
      ? { path: args.path, external: true }
      : { errors: [{ text: `helper bundle: ${args.importer} imports ${args.path}; the root helper loads node builtins only` }] }));
  },
};

