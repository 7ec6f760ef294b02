// dist/bundle/sendmail.cjs with its V8 code cache (src/sendmail-loader.ts, issue 17): the cache
// is used when it fits, and `sendmail` works the same when it is missing, rejected by V8 (a
// corrupted header stands in for another node version) or made for another build.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite } from './helpers/daemon.js';
import { launcherFlags, packageRoot } from './helpers/package-root.js';
import { cleanupTmp } from './helpers/tmp.js';

test.after(() => cleanupTmp());

let built: string | null = null;
/** One package root with the bundle built (a training run makes the cache); each test copies its dist/bundle. */
function freshRoot(): { root: string; bundle: string; cache: string } {
  built ??= packageRoot(true);
  const root = packageRoot(false);
  fs.cpSync(path.join(built, 'dist', 'bundle'), path.join(root, 'dist', 'bundle'), { recursive: true });
  const bundle = path.join(root, 'dist', 'bundle', 'sendmail.cjs');
  return { root, bundle, cache: `${bundle}.cache` };
}

/** What the loader made of the cache, in a node started as the launcher starts it (or with other flags). */
function cacheUse(root: string, bundle: string, flags = launcherFlags(root)): string {
  const r = spawnSync(process.execPath, [...flags, '-e', `process.stdout.write(require(${JSON.stringify(path.join(root, 'dist/bundle/sendmail-loader.cjs'))}).loadSendmailBundle(${JSON.stringify(bundle)}).cache)`], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  return r.stdout;
}

/** `sendmail -t` through the launcher, as the #! line runs it; the message must be in the maildrop. */
async function sendmailWorks(root: string): Promise<void> {
  const site = await makeSite();
  const r = spawnSync(process.execPath, [...launcherFlags(root), path.join(root, 'bin', 'tidemail.js'), 'sendmail', '-C', site.configPath, '-t'], {
    input: 'To: root\nSubject: cron\n\nhello\n',
    encoding: 'utf8',
    timeout: 30_000,
  });
  assert.is(r.status, 0, r.stderr);
  assert.is(r.stderr, '');
  const files = fs.readdirSync(path.join(site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.'));
  assert.is(files.length, 1, 'one message in the maildrop');
  assert.match(fs.readFileSync(path.join(site.stateDir, 'maildrop', files[0]!), 'latin1'), /"recipients":\["root@tidemail\.test"\]/);
}

test('the build makes a cache for the bundle, and the launcher uses it', async () => {
  const { root, bundle, cache } = freshRoot();
  assert.ok(fs.existsSync(cache), 'packaging/bundle.mjs wrote sendmail.cjs.cache');
  assert.is(cacheUse(root, bundle), 'used');
  await sendmailWorks(root);
});

test('other V8 flags than the launcher\'s: V8 rejects the cache, nothing else changes', () => {
  const { root, bundle } = freshRoot();
  assert.is(cacheUse(root, bundle, []), 'rejected');
});

test('a corrupted cache (as from another node version) is rejected and sendmail still works', async () => {
  const { root, bundle, cache } = freshRoot();
  const data = fs.readFileSync(cache);
  const header = data.indexOf(10) + 1; // our build-id line, then V8's header (magic, version hash, …)
  for (let i = header; i < header + 16; i++) data[i]! ^= 0xff;
  fs.writeFileSync(cache, data);
  assert.is(cacheUse(root, bundle), 'rejected');
  await sendmailWorks(root);
});

test('no cache, or one made for another build of the bundle: not used, and sendmail still works', async () => {
  const missing = freshRoot();
  fs.rmSync(missing.cache);
  assert.is(cacheUse(missing.root, missing.bundle), 'none');
  await sendmailWorks(missing.root);
  // V8 checks only the source's length: a cache of a same-length but different build must not pass.
  const other = freshRoot();
  const data = fs.readFileSync(other.cache);
  const id = data.subarray(0, data.indexOf(10)).toString('latin1');
  const otherId = id.slice(0, -1) + (id.endsWith('0') ? '1' : '0');
  fs.writeFileSync(other.cache, Buffer.concat([Buffer.from(otherId, 'latin1'), data.subarray(id.length)]));
  assert.is(cacheUse(other.root, other.bundle), 'none');
  await sendmailWorks(other.root);
});

test.run();
