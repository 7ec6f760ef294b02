// `npm i -g tidemail`: the published tarball holds the launcher, the compiled code and the
// templates but no tests, declares every command name, runs nothing of ours at install time,
// and what it holds is enough to run (checked by running the unpacked tarball's commands).

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO, makeSite } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
const COMMANDS = ['tidemail', 'sendmail', 'mailq', 'runq', 'newaliases', 'mailrm', 'rmail', 'smtpd', 'in.smtpd'];

/** Packs the tarball as `npm publish` would (without `prepare`: dist/ is already built; the bundle is rebuilt when tsc ran after it). */
function pack(): { dir: string; files: string[] } {
  const bundle = fs.statSync(path.join(REPO, 'dist/bundle/main.js'), { throwIfNoEntry: false });
  if (!bundle || bundle.mtimeMs < fs.statSync(path.join(REPO, 'dist/src/main.js')).mtimeMs) {
    execFileSync(process.execPath, [path.join(REPO, 'packaging/bundle.mjs')], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
  const dest = tmpDir();
  const out = execFileSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', dest], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const [info] = JSON.parse(out) as { filename: string; files: { path: string }[] }[];
  const dir = path.join(dest, 'unpacked');
  fs.mkdirSync(dir);
  execFileSync('tar', ['-xzf', path.join(dest, info!.filename), '-C', dir, '--strip-components=1']);
  return { dir, files: info!.files.map((f) => f.path) };
}

let packed: ReturnType<typeof pack> | null = null;
const packedOnce = () => (packed ??= pack());

test('the tarball has the launcher, compiled code, templates and hooks, and no tests or sources', () => {
  const { files } = packedOnce();
  for (const f of ['bin/tidemail.js', 'bin/package.json', 'dist/src/main.js', 'dist/src/daemon.js', 'dist/bundle/main.js', 'dist/bundle/sendmail.cjs', 'dist/bundle/sendmail.cjs.cache', 'dist/bundle/sendmail-loader.cjs', 'routes/gmail.toml', 'packaging/hooks/openwrt-hotplug', 'packaging/prune-node-modules.mjs', 'README.md']) {
    assert.ok(files.includes(f), `${f} missing from the tarball`);
  }
  for (const f of files) {
    assert.not.match(f, /^(test|src|dist\/test|dist\/test-bin|dist\/test-tmp|node_modules|\.ci)\//, `${f} should not be published`);
    assert.not.match(f, /\.test\.js$/, f);
  }
});

test('every command name is a bin, and nothing of ours runs at install time', () => {
  assert.equal(Object.keys(pkg.bin).sort(), [...COMMANDS].sort());
  for (const target of Object.values(pkg.bin)) assert.is(target, 'bin/tidemail.js');
  for (const hook of ['preinstall', 'install', 'postinstall', 'prepublish']) assert.not.ok(pkg.scripts?.[hook], `scripts.${hook} would run on npm i -g`);
  // (`prepare` runs for git installs and before packing, never for a registry install.)
});

test('every dependency with an install script is decided in allowScripts (npm 11.16+: approved, or denied as esbuild is), and npm itself finds none pending', () => {
  const lock = JSON.parse(fs.readFileSync(path.join(REPO, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; hasInstallScript?: boolean }> };
  const allow = (pkg.allowScripts ?? {}) as Record<string, boolean>;
  const withScripts = Object.entries(lock.packages).filter(([, v]) => v.hasInstallScript).map(([k, v]) => ({ name: k.slice(k.lastIndexOf('node_modules/') + 'node_modules/'.length), version: v.version }));
  assert.ok(withScripts.some((p) => p.name === 'sqlite3'), 'sqlite3 has no install script in the lockfile?');
  // esbuild (dev only) is denied: its postinstall only checks the binary its optional platform
  // package already holds, and fetches one (npm, then the registry directly) when that is missing.
  const decided = (v: unknown) => v === true || v === false;
  for (const p of withScripts) assert.ok(decided(allow[p.name]) || decided(allow[`${p.name}@${p.version}`]), `${p.name}@${p.version} runs an install script but is not in allowScripts`);
  // Nothing approved that is not there: a stale entry would hide the next package that needs one.
  for (const key of Object.keys(allow)) assert.ok(withScripts.some((p) => key === p.name || key === `${p.name}@${p.version}`), `allowScripts.${key} matches no installed package with an install script`);
  // npm's own view, where npm knows the field (the command is read-only).
  const npmCheck = spawnSync('npm', ['approve-scripts', '--allow-scripts-pending'], { cwd: REPO, encoding: 'utf8', timeout: 60_000 });
  if (npmCheck.status === 0 && !/Unknown command/i.test(npmCheck.stdout + npmCheck.stderr)) {
    assert.not.match(npmCheck.stdout + npmCheck.stderr, /not yet covered by allowScripts/, npmCheck.stdout + npmCheck.stderr);
  }
});

test('the unpacked tarball runs under every command name', async () => {
  const { dir } = packedOnce();
  // Dependencies as npm would install them next to the package.
  fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  const bin = tmpDir();
  for (const c of COMMANDS) fs.symlinkSync(path.join(dir, 'bin/tidemail.js'), path.join(bin, c));
  const site = await makeSite();
  const env = { ...process.env, TIDEMAIL_CONFIG: site.configPath };
  const run = (cmd: string, args: string[], input = '') => spawnSync(path.join(bin, cmd), args, { env, input, encoding: 'utf8', timeout: 30_000 });

  const help = run('tidemail', ['--help']);
  assert.is(help.status, 0, help.stderr);
  assert.match(help.stdout, /^usage: tidemail/);
  const sent = run('sendmail', ['-i', 'someone@remote.example'], 'Subject: packed\n\nx\n');
  assert.is(sent.status, 0, sent.stderr);
  const q = run('mailq', []);
  assert.is(q.status, 0, q.stderr);
  assert.match(q.stdout, /1 message\(s\) wait in the maildrop|someone@remote\.example/);
  const aliases = path.join(site.dir, 'aliases');
  fs.writeFileSync(aliases, 'postmaster: root\n');
  const na = run('newaliases', ['--aliases', aliases]);
  assert.is(na.status, 0, na.stderr);
  assert.match(na.stdout, /1 aliases/);
});

test.after(() => cleanupTmp());
test.run();
