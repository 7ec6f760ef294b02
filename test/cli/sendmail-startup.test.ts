// `sendmail` from cron costs little more than starting node (issue 17): the submission path loads
// only what writing the maildrop file needs. A module-resolution hook (node --import) records
// every module the real binary loads while it queues one message; the daemon, SMTP server, SQLite
// bindings and delivery code must not be among them.

import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/** Runs `sendmail ARGS` with a hook that appends each resolved module URL to a file. */
async function loadedBy(args: string[], input: string, configPath: string): Promise<{ code: number | null; loaded: string[] }> {
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
  const r = await runCli(['sendmail', '-C', configPath, ...args], { input, env: { NODE_OPTIONS: `--import ${pathToFileURL(register).href}` } });
  assert.is(r.code, 0, r.stderr);
  return { code: r.code, loaded: fs.existsSync(list) ? fs.readFileSync(list, 'utf8').split('\n').filter(Boolean) : [] };
}

test('sendmail -t loads neither the daemon, the SMTP server, SQLite nor delivery code', async () => {
  const site = await makeSite();
  const { loaded } = await loadedBy(['-t'], 'To: root\nSubject: cron\n\nhello\n', site.configPath);
  assert.ok(loaded.some((u) => u.endsWith('/cli/sendmail.js')), `the hook saw the sendmail module:\n${loaded.join('\n')}`);
  const heavy = loaded.filter((u) => /\/node_modules\/(sqlite3|smtp-server|mailauth|ssh2|node-cron)\/|\/src\/(daemon|smtp\/server|deliver\/|queue\/sqlite|queue\/db)\.?/.test(u));
  assert.equal(heavy, [], `sendmail loaded modules it does not need:\n${heavy.join('\n')}`);
  // nodemailer: only its address parser, not the mailer.
  assert.equal(loaded.filter((u) => u.includes('/node_modules/nodemailer/') && !u.includes('/addressparser/')), []);
  assert.ok(fs.readdirSync(path.join(site.stateDir, 'maildrop')).length >= 1, 'the message is in the maildrop');
});

test('sendmail -bp still lists the queue (its modules are loaded when that mode runs)', async () => {
  const site = await makeSite();
  const r = await runCli(['sendmail', '-C', site.configPath, '-bp']);
  assert.ok(r.code === 0 || r.code === 69 || r.code === 75, `exit ${r.code}: ${r.stderr}`);
  assert.not.match(r.stderr, /at .*\.js:\d+/, 'no stack trace');
});

test.run();
