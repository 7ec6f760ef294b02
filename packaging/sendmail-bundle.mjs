// dist/bundle/sendmail.cjs, its V8 code cache and its loader (issue 17), for packaging/bundle.mjs.
//
// `sendmail` from cron should cost little more than starting node. The ES-module bundle leaves
// three costs that this file removes for the submission path alone:
// - ES modules get no code cache on Node 20, so our code and smol-toml are compiled on every
//   run. sendmail.cjs is src/sendmail-main.ts and everything it imports, smol-toml and
//   nodemailer's address parser included (pure JavaScript, nothing hooked), in one CommonJS
//   function expression that src/sendmail-loader.ts compiles with `vm.Script` and `cachedData`.
// - esbuild turns each `import … from 'node:X'` into a `require` at start: net, crypto,
//   child_process, streams … load although a message with no daemon running needs none of
//   them. Here every node builtin is required at its first use instead (lazyBuiltins).
// - The daemon never loads this file (the launcher takes it for sendmail only), so its memory
//   is not touched; the ES-module bundle stays what every other command runs.
//
// The cache is made by a training run: the launcher's node flags (they are part of what V8
// checks), one real `sendmail -t` into a scratch maildrop, then `createCachedData()`, so it
// holds the functions that run, not only the top level. It is shipped beside the bundle and
// never written at run time.

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

/** Packages inlined into sendmail.cjs; any other import of a package is an error (it would be the daemon's). */
const INLINED_PACKAGES = /^(smol-toml|nodemailer\/lib\/addressparser\/index\.js)$/;

export async function buildSendmailBundle({ root, src, outDir }) {
  const file = path.join(outDir, 'sendmail.cjs');
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: [path.join(src, 'sendmail-main.js')],
    bundle: true,
    write: false,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    // import() of a builtin becomes a require at that point; of our own code, a module that
    // fails (notInThisBundle): what the submission path never runs stays out.
    supported: { 'dynamic-import': false },
    minify: false,
    sourcemap: false,
    legalComments: 'none',
    metafile: true,
    logLevel: 'warning',
    plugins: [notInThisBundle, onlyInlinedPackages, ownUrlInCjs(src, outDir)],
  });
  const heavy = Object.keys(result.metafile.inputs).filter((f) => /(^|\/)dist\/src\/(daemon|smtp\/server|deliver\/|queue\/sqlite|queue\/db)\b/.test(f));
  if (heavy.length) throw new Error(`sendmail bundle: the submission path imports ${heavy.join(', ')}`);
  const body = lazyBuiltins(result.outputFiles[0].text);
  // The first line names this build: the cache is only used with the bundle it was made for.
  const id = `// tidemail sendmail bundle ${createHash('sha256').update(body).digest('hex').slice(0, 32)}\n`;
  const ownUrl = 'var __ownUrl = (rel) => require("node:url").pathToFileURL(require("node:path").join(__dirname, rel)).href;\n';
  fs.writeFileSync(file, `${id}(function (exports, require, module, __filename, __dirname) {\n${ownUrl}${body}})\n`);
  // Its loader, in CommonJS too: the launcher requires it, loading no ES module at all.
  await esbuild.build({
    entryPoints: [path.join(src, 'sendmail-loader.js')],
    outfile: path.join(outDir, 'sendmail-loader.cjs'),
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
  const made = makeCodeCache(root, src, file, id);
  return `sendmail.cjs ${(fs.statSync(file).size / 1024).toFixed(0)} KiB, ${made}`;
}

/** `import('./x.js')` of our code (context.ts's openStore, say): a rejected promise here, not x.js inlined. */
const notInThisBundle = {
  name: 'not-in-this-bundle',
  setup(build) {
    build.onResolve({ filter: /^\./ }, (args) => (args.kind === 'dynamic-import' ? { path: args.path, namespace: 'not-in-sendmail-bundle' } : undefined));
    build.onLoad({ filter: /.*/, namespace: 'not-in-sendmail-bundle' }, (args) => ({
      contents: `throw new Error(${JSON.stringify(`${args.path} is not in the sendmail bundle (packaging/sendmail-bundle.mjs)`)});`,
      loader: 'js',
    }));
  },
};

const onlyInlinedPackages = {
  name: 'only-inlined-packages',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      if (args.path.startsWith('node:')) return { path: args.path, external: true };
      if (INLINED_PACKAGES.test(args.path)) return undefined;
      return { errors: [{ text: `sendmail bundle: ${args.importer} imports ${args.path}; only ${INLINED_PACKAGES} is inlined` }] };
    });
  },
};

/**
 * `import.meta.url` of a dist/src module → its dist/src URL, from the bundle's own directory
 * (__ownUrl is defined in the wrapper, outside esbuild's scope, where `require` is node's).
 */
export function ownUrlInCjs(src, outDir) {
  return {
    name: 'own-import-meta-url-cjs',
    setup(build) {
      build.onLoad({ filter: /\.js$/ }, async (args) => {
        if (!args.path.startsWith(src + path.sep)) return undefined;
        const text = await fs.promises.readFile(args.path, 'utf8');
        if (!text.includes('import.meta.url')) return { contents: text, loader: 'js' };
        const rel = JSON.stringify(path.relative(outDir, args.path).split(path.sep).join('/'));
        return { contents: text.replaceAll('import.meta.url', `__ownUrl(${rel})`), loader: 'js' };
      });
    },
  };
}

/**
 * `var import_node_net = __toESM(require("node:net"));` → the module, required at its first
 * property access. esbuild reaches an import only through property accesses
 * (`import_node_net.default`, `(0, import_node_net.createConnection)`), so a Proxy that loads on
 * `get` stands in for it. `default` is the module itself, as __toESM makes it for a builtin; one
 * require per builtin, not __toESM's copy of every export per importing module (~2 ms for fs).
 */
function lazyBuiltins(code) {
  let n = 0;
  const out = code.replace(/^var (import_\w+) = (?:__toESM\()?require\("(node:[\w/]+)"\)(?:, 1\))?\)?;$/gm, (_, name, id) => {
    n++;
    return `var ${name} = __lazyBuiltin(${JSON.stringify(id)});`;
  });
  if (n === 0) throw new Error('sendmail bundle: no builtin require found to make lazy (esbuild output changed?)');
  const helper = `var __builtins = {};
var __lazyBuiltin = (id) => new Proxy({}, { get: (_, key) => { const m = (__builtins[id] ??= require(id)); return key === "default" ? m : m[key]; } });
`;
  return helper + out;
}

/** Runs the bundle once, as the launcher would, and writes the cache; a reason when it cannot. */
function makeCodeCache(root, src, file, id) {
  const flags = launcherNodeFlags(path.join(root, 'bin', 'tidemail.js'));
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-cache-'));
  try {
    const config = path.join(scratch, 'tidemail.toml');
    fs.writeFileSync(config, `state_dir = ${JSON.stringify(path.join(scratch, 'state'))}\n`);
    const loader = pathToFileURL(path.join(src, 'sendmail-loader.js')).href;
    const train = `
      const { runSendmailBundle } = await import(${JSON.stringify(loader)});
      const fs = await import('node:fs');
      const file = ${JSON.stringify(file)};
      const { script, exports } = runSendmailBundle(file, fs.readFileSync(file, 'utf8'));
      const code = await exports.sendmailMain(['node', 'sendmail', '-C', ${JSON.stringify(config)}, '-t']);
      if (code !== 0) throw new Error('training run: exit ' + code);
      fs.writeFileSync(file + '.cache', Buffer.concat([Buffer.from(${JSON.stringify(id)}), script.createCachedData()]));
    `;
    const r = spawnSync(process.execPath, [...flags, '--input-type=module', '-e', train], { input: 'To: root\nSubject: cache\n\ntraining run\n', encoding: 'utf8' });
    if (r.status !== 0) {
      console.error(`bundle: sendmail.cjs training run failed, no code cache:\n${r.stderr || r.error?.message}`);
      return 'no code cache';
    }
    return `code cache ${(fs.statSync(`${file}.cache`).size / 1024).toFixed(0)} KiB (node ${process.version}, ${flags.join(' ') || 'no flags'})`;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** The V8 flags on the launcher's `#!` line (V8 rejects a cache made with other flags). */
function launcherNodeFlags(launcher) {
  const shebang = fs.readFileSync(launcher, 'utf8').split('\n', 1)[0];
  const words = shebang.split(/\s+/);
  return words.slice(words.indexOf('node') + 1).filter((w) => w.startsWith('--'));
}
