// `sendmail` from cron costs little more than starting node (issue 17): the submission path loads
// only what writing the maildrop file needs. A module-resolution hook (node --import) records
// every module the real launcher loads while it queues one message; the daemon, SMTP server,
// SQLite bindings and delivery code must not be among them — run from dist/src (what tsc
// writes) and from the bundle (dist/bundle, packaging/bundle.mjs) that the packages ship and the
// launcher prefers. Each case runs in a package root of its own, so a bundle in the checkout,
// fresh or stale, changes nothing here.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO, makeSite, runCli } from '../helpers/daemon.js';
import { launcherFlags, packageRoot } from '../helpers/package-root.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const HEAVY_PACKAGES = /\/node_modules\/(sqlite3|smtp-server|mailauth|ssh2|node-cron)\//;
const HEAVY_OURS = /^dist\/src\/(daemon|smtp\/server|deliver\/|queue\/sqlite|queue\/db)\.?/;

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

/**
 * Runs ROOT/bin/tidemail.js sendmail ARGS with the launcher's flags and a CommonJS preload
 * (no ES module loader of its own) that records, at exit, node's builtin modules and the
 * CommonJS files that loaded.
 */
function loadedWithoutHooks(root: string, args: string[], input: string): { builtins: string[]; files: string[] } {
  const dir = tmpDir();
  const out = path.join(dir, 'loaded.json');
  const preload = path.join(dir, 'record.cjs');
  fs.writeFileSync(preload, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({
  builtins: process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)),
  files: Object.keys(require.cache),
})));\n`);
  const r = spawnSync(process.execPath, [...launcherFlags(root), path.join(root, 'bin', 'tidemail.js'), 'sendmail', ...args], {
    input,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, NODE_OPTIONS: `--require ${preload}` },
  });
  assert.is(r.status, 0, r.stderr);
  const got = JSON.parse(fs.readFileSync(out, 'utf8')) as { builtins: string[]; files: string[] };
  return { builtins: got.builtins, files: got.files.filter((f) => f !== preload).map((f) => path.relative(root, f)) };
}

/** Node modules a submission with no daemon running needs none of (their loading was most of sendmail's cost, issue 17). */
const HEAVY_BUILTINS = ['net', 'crypto', 'child_process', 'fs/promises', 'stream', 'readline', 'dgram', 'internal/modules/esm/module_job'];

test('sendmail -t from the bundle is dist/bundle/sendmail.cjs alone: no ES module, no package file, none of net, crypto, child_process, fs/promises or streams', async () => {
  const site = await makeSite();
  const root = packageRoot(true);
  const { builtins, files } = loadedWithoutHooks(root, ['-C', site.configPath, '-t'], 'To: root\nSubject: cron\n\nhello\n');
  assert.equal(files, ['bin/tidemail.js', 'dist/bundle/sendmail-loader.cjs'], 'the launcher and the loader, nothing else as a module');
  const heavy = HEAVY_BUILTINS.filter((m) => builtins.includes(m));
  assert.equal(heavy, [], `sendmail loaded node modules it does not need:\n${heavy.join('\n')}`);
  const inside = modulesIn(root, 'dist/bundle/sendmail.cjs');
  assert.ok(inside.includes('dist/src/cli/sendmail-submit.js'), `sendmail.cjs should hold the submission:\n${inside.join('\n')}`);
  const heavyOurs = inside.filter((m) => HEAVY_OURS.test(m));
  assert.equal(heavyOurs, [], `sendmail.cjs holds modules it does not need:\n${heavyOurs.join('\n')}`);
  assert.ok(fs.readdirSync(path.join(site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.')).length === 1, 'the message is in the maildrop');
});

test('the bundle hands everything but a submission to the whole program: -bp, --help, a bad option, a broken config', async () => {
  const site = await makeSite();
  const root = packageRoot(true);
  const launcher = path.join(root, 'bin', 'tidemail.js');
  const run = (args: string[], input = '') => spawnSync(process.execPath, [...launcherFlags(root), launcher, ...args], { input, encoding: 'utf8', timeout: 30_000 });
  const bp = run(['sendmail', '-C', site.configPath, '-bp']);
  assert.is(bp.status, 0, bp.stderr);
  assert.match(bp.stdout, /queue is empty/i);
  const help = run(['sendmail', '--help']);
  assert.is(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: tidemail sendmail/);
  const broken = path.join(site.dir, 'broken.toml');
  fs.writeFileSync(broken, 'state_dir = [\n');
  const bad = run(['sendmail', '-C', broken, 'root'], 'Subject: x\n\nx\n');
  assert.is(bad.status, 78, bad.stderr);
  assert.match(bad.stderr, /^tidemail: configuration error: /);
  assert.not.match(bad.stderr, /at .*\.js:\d+/, 'no stack trace');
  const none = run(['sendmail', '-C', site.configPath], 'Subject: x\n\nx\n');
  assert.is(none.status, 64, none.stderr);
  assert.match(none.stderr, /^sendmail: no recipients given/);
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
