// `sendmail` from cron costs little more than starting node (issue 17): the submission path loads
// only what writing the maildrop file needs. A module-resolution hook (node --import) records
// every module the real launcher loads while it queues one message; the daemon, SMTP server,
// SQLite bindings and delivery code must not be among them — run from dist/src (what tsc
// writes) and from the bundle (dist/bundle, packaging/bundle.mjs) that the packages ship and the
// launcher prefers. Each case runs in a package root of its own, so a bundle in the checkout,
// fresh or stale, changes nothing here.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO, makeSite, runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const HEAVY_PACKAGES = /\/node_modules\/(sqlite3|smtp-server|mailauth|ssh2|node-cron)\//;
const HEAVY_OURS = /^dist\/src\/(daemon|smtp\/server|deliver\/|queue\/sqlite|queue\/db)\.?/;

/** A package root as installed (bin, dist/src, package.json, node_modules; no src/), with the bundle built in it or not. */
function packageRoot(withBundle: boolean): string {
  const root = tmpDir('tidemail-pkg-');
  fs.cpSync(path.join(REPO, 'bin'), path.join(root, 'bin'), { recursive: true });
  fs.cpSync(path.join(REPO, 'dist', 'src'), path.join(root, 'dist', 'src'), { recursive: true });
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(root, 'package.json'));
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(root, 'node_modules'));
  if (withBundle) execFileSync(process.execPath, [path.join(REPO, 'packaging', 'bundle.mjs'), root], { stdio: ['ignore', 'ignore', 'pipe'] });
  return root;
}

/** Runs ROOT/bin/tidemail.js sendmail ARGS with a hook that appends each resolved module URL to a file. */
function loadedBy(root: string, args: string[], input: string): string[] {
  const dir = tmpDir();
  const list = path.join(dir, 'loaded.txt');
  const hooks = path.join(dir, 'hooks.mjs');
  fs.writeFileSync(hooks, `import fs from 'node:fs';
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  fs.appendFileSync(${JSON.stringify(list)}, r.url + '\\n');
  return r;
}\n`);
  const register = path.join(dir, 'register.mjs');
  fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  const r = spawnSync(process.execPath, [path.join(root, 'bin', 'tidemail.js'), 'sendmail', ...args], {
    input,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, NODE_OPTIONS: `--import ${pathToFileURL(register).href}` },
  });
  assert.is(r.status, 0, r.stderr);
  const urls = fs.existsSync(list) ? fs.readFileSync(list, 'utf8').split('\n').filter(Boolean) : [];
  return [...new Set(urls)].map((u) => (u.startsWith(pathToFileURL(root).href + '/') ? u.slice(pathToFileURL(root).href.length + 1) : u));
}

/** The dist/src modules a loaded bundle file holds (esbuild heads each with its path: not minified). */
function modulesIn(root: string, bundleFile: string): string[] {
  return [...fs.readFileSync(path.join(root, bundleFile), 'utf8').matchAll(/^\/\/ (dist\/src\/\S+\.js)$/gm)].map((m) => m[1]!);
}

test('sendmail -t from dist/src loads neither the daemon, the SMTP server, SQLite nor delivery code', async () => {
  const site = await makeSite();
  const root = packageRoot(false);
  const loaded = loadedBy(root, ['-C', site.configPath, '-t'], 'To: root\nSubject: cron\n\nhello\n');
  assert.ok(loaded.includes('dist/src/cli/sendmail.js'), `the hook saw the sendmail module:\n${loaded.join('\n')}`);
  assert.not.ok(loaded.some((u) => u.startsWith('dist/bundle/')), 'no bundle in this root');
  const heavy = loaded.filter((u) => HEAVY_PACKAGES.test(u) || HEAVY_OURS.test(u));
  assert.equal(heavy, [], `sendmail loaded modules it does not need:\n${heavy.join('\n')}`);
  // nodemailer: only its address parser, not the mailer.
  assert.equal(loaded.filter((u) => u.includes('/node_modules/nodemailer/') && !u.includes('/addressparser/')), []);
  assert.ok(fs.readdirSync(path.join(site.stateDir, 'maildrop')).length >= 1, 'the message is in the maildrop');
});

test('sendmail -t runs from the bundle when it is there, and the bundle it loads holds no daemon code', async () => {
  const site = await makeSite();
  const root = packageRoot(true);
  const loaded = loadedBy(root, ['-C', site.configPath, '-t'], 'To: root\nSubject: cron\n\nhello\n');
  assert.ok(loaded.includes('dist/bundle/main.js'), `the launcher did not load the bundle:\n${loaded.join('\n')}`);
  assert.equal(loaded.filter((u) => u.startsWith('dist/src/')), [], 'nothing of dist/src besides the bundle');
  const heavyPackages = loaded.filter((u) => HEAVY_PACKAGES.test(u));
  assert.equal(heavyPackages, [], `sendmail loaded packages it does not need:\n${heavyPackages.join('\n')}`);
  assert.equal(loaded.filter((u) => u.includes('/node_modules/nodemailer/') && !u.includes('/addressparser/')), []);
  const inside = loaded.filter((u) => u.startsWith('dist/bundle/')).flatMap((f) => modulesIn(root, f));
  assert.ok(inside.includes('dist/src/cli/sendmail.js'), `the loaded chunks should hold cli/sendmail.js:\n${inside.join('\n')}`);
  const heavy = inside.filter((m) => HEAVY_OURS.test(m));
  assert.equal(heavy, [], `the bundle's sendmail path holds modules it does not need:\n${heavy.join('\n')}`);
  assert.ok(fs.readdirSync(path.join(site.stateDir, 'maildrop')).length >= 1, 'the message is in the maildrop');
});

test('in a checkout, a bundle older than dist/src (tsc ran after it) is not used', async () => {
  const site = await makeSite();
  const root = packageRoot(true);
  fs.mkdirSync(path.join(root, 'src'));
  fs.writeFileSync(path.join(root, 'src', 'main.ts'), '');
  const later = new Date(fs.statSync(path.join(root, 'dist', 'bundle', 'main.js')).mtimeMs + 5000);
  fs.utimesSync(path.join(root, 'dist', 'src', 'main.js'), later, later);
  const loaded = loadedBy(root, ['-C', site.configPath, '-t'], 'To: root\n\nhello\n');
  assert.ok(loaded.includes('dist/src/main.js'), loaded.join('\n'));
  assert.not.ok(loaded.some((u) => u.startsWith('dist/bundle/')), loaded.join('\n'));
});

test('sendmail -bp still lists the queue (its modules are loaded when that mode runs)', async () => {
  const site = await makeSite();
  const r = await runCli(['sendmail', '-C', site.configPath, '-bp']);
  assert.ok(r.code === 0 || r.code === 69 || r.code === 75, `exit ${r.code}: ${r.stderr}`);
  assert.not.match(r.stderr, /at .*\.js:\d+/, 'no stack trace');
});

test.run();
