// Bundles the compiled program (dist/src, from tsc) into dist/bundle/, which the launcher runs
// when it is there (issue 17):   node packaging/bundle.mjs [PACKAGE_ROOT]
//
// Why: Node links every ES module separately, and each costs memory for as long as the process
// lives; the daemon loads ~110 of ours. The bundle is main.js plus chunks (esbuild splitting),
// one per lazily imported command or module and one per set of modules they share, so every
// `import()` stays lazy: `sendmail` still never loads the daemon, the daemon loads ~50 files.
//
// What stays outside: node builtins and every npm package. sqlite3 is a native addon;
// nodemailer is pinned and hooked, and deps/pinned.ts checks the installed
// copy, which must be the one that runs; mailauth, ssh2 and node-cron load only when used.
// They load from node_modules exactly as from dist/src.
//
// dist/src stays: the tests run from it, the privsep helper's per-delivery child runs from it, and
// code that finds files next to itself (package.json, routes/, presets/, helper.js) must find
// the same files. So each module's `import.meta.url` is rewritten to the URL the module has
// under dist/src. Not minified and no source map: a stack trace in the log names a line of
// dist/bundle/*.js, and esbuild heads each module there with its dist/src path.
//
// Beside it, sendmail.cjs and sendmail.cjs.cache: `sendmail` submitting a message (what cron
// runs) as one CommonJS file, src/sendmail-main.ts and what it imports, with V8's code cache
// made here by this node binary with the launcher's flags — see sendmail-bundle.mjs. And
// privsep-helper.cjs: the root delivery helper in one CommonJS file — see helper-bundle.mjs.

import * as esbuild from 'esbuild';
import { buildHelperBundle } from './helper-bundle.mjs';
import { buildSendmailBundle } from './sendmail-bundle.mjs';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const SRC = path.join(ROOT, 'dist', 'src');
const OUT = path.join(ROOT, 'dist', 'bundle');
const NEW = `${OUT}.new-${process.pid}`;

if (!fs.existsSync(path.join(SRC, 'main.js'))) {
  console.error(`bundle: ${path.join(SRC, 'main.js')} missing: run npx tsc -p . first`);
  process.exit(1);
}

/** `import.meta.url` of a dist/src module → that module's own URL, computed from the chunk's. */
const ownUrl = {
  name: 'own-import-meta-url',
  setup(build) {
    build.onLoad({ filter: /\.js$/ }, async (args) => {
      if (!args.path.startsWith(SRC + path.sep)) return undefined;
      const text = await fs.promises.readFile(args.path, 'utf8');
      if (!text.includes('import.meta.url')) return { contents: text, loader: 'js' };
      // Every output file is directly in dist/bundle/, so one relative path fits any chunk.
      const rel = path.relative(OUT, args.path).split(path.sep).join('/');
      return { contents: text.replaceAll('import.meta.url', `new URL(${JSON.stringify(rel)}, import.meta.url).href`), loader: 'js' };
    });
  },
};

const result = await esbuild.build({
  absWorkingDir: ROOT,
  entryPoints: { main: path.join(SRC, 'main.js') },
  outdir: NEW,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  chunkNames: '[name]-[hash]',
  minify: false,
  sourcemap: false,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
  plugins: [ownUrl],
});
const sendmail = await buildSendmailBundle({ root: ROOT, src: SRC, outDir: NEW });
const helper = await buildHelperBundle({ root: ROOT, src: SRC, outDir: NEW });
// Swap the whole directory: a launcher starting meanwhile finds either bundle or none (then it
// runs dist/src), never main.js of one build with the chunks of another.
// Two builds at once (test files run in parallel, each may rebuild a stale bundle) are of the
// same dist/src: when the other one's is put in place first, it stays and ours goes.
const OLD = `${OUT}.old-${process.pid}`;
try {
  fs.renameSync(OUT, OLD);
} catch (err) {
  if (err.code !== 'ENOENT') throw err;
}
try {
  fs.renameSync(NEW, OUT);
} catch (err) {
  if ((err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') || !fs.existsSync(path.join(OUT, 'main.js'))) throw err;
  fs.rmSync(NEW, { recursive: true, force: true });
}
fs.rmSync(OLD, { recursive: true, force: true });
const files = Object.keys(result.metafile.outputs);
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.log(`bundle: ${files.length} files, ${(bytes / 1024).toFixed(0)} KiB in ${path.relative(ROOT, OUT)}/; ${sendmail}; ${helper}`);
