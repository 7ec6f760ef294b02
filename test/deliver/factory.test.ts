// Transports load when their route first delivers (issue 17: idle memory). A module-resolution
// hook (node --import) records what the real daemon loads: idle, with a smarthost route, none
// of the SMTP client nor the mailbox writers; after one message, the SMTP client, and the mail
// arrives. And a link-down while a delivery waits for that import ends it "interrupted",
// without a connection.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { createTransport } from '../../src/deliver/factory.js';
import type { Envelope } from '../../src/queue/store.js';
import { loadRoutes } from '../../src/routes/load.js';
import { REPO, makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const DELIVERY_CODE = /^dist\/src\/deliver\/(transports|smtp|smtp-pool|dial|mx|mx-dns|ssh-tunnel|pipe|maildir|mbox|mda|lmtp)\.js$/;

/** NODE_OPTIONS that append "pid url" for each module a process resolves to LIST. */
function hookOptions(list: string): string {
  const dir = tmpDir();
  const hooks = path.join(dir, 'hooks.mjs');
  fs.writeFileSync(hooks, `import fs from 'node:fs';
export async function resolve(spec, ctx, next) {
  const r = await next(spec, ctx);
  fs.appendFileSync(${JSON.stringify(list)}, process.pid + ' ' + r.url + '\\n');
  return r;
}\n`);
  const register = path.join(dir, 'register.mjs');
  fs.writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);
  return `--import ${pathToFileURL(register).href}`;
}

/** The dist/src modules process PID has loaded: directly, or inside bundle chunks (esbuild heads each module with its path). */
function modulesOf(list: string, pid: number): string[] {
  const root = pathToFileURL(REPO).href + '/';
  const urls = fs.readFileSync(list, 'utf8').split('\n').filter((l) => l.startsWith(`${pid} `)).map((l) => l.slice(l.indexOf(' ') + 1));
  const ours = [...new Set(urls)].filter((u) => u.startsWith(root)).map((u) => u.slice(root.length));
  return ours.flatMap((f) =>
    f.startsWith('dist/bundle/') ? [...fs.readFileSync(path.join(REPO, f), 'utf8').matchAll(/^\/\/ (dist\/src\/\S+\.js)$/gm)].map((m) => m[1]!) : [f],
  );
}

test('the idle daemon holds no transport code; the first message loads the SMTP client and is delivered', async () => {
  const smarthost = await startSmarthost();
  const site = await makeSite();
  site.route('out', smarthostRoute(smarthost.port));
  // The daemon drops to "nobody" after start and the hook still writes.
  const dir = tmpDir();
  fs.chmodSync(dir, 0o755);
  const list = path.join(dir, 'loaded.txt');
  fs.writeFileSync(list, '', { mode: 0o666 });
  fs.chmodSync(list, 0o666);
  const d = await startDaemon(site, { NODE_OPTIONS: hookOptions(list) });
  try {
    const idle = modulesOf(list, d.proc.pid!);
    assert.ok(idle.includes('dist/src/deliver/runner.js'), `the hook saw the runner:\n${idle.join('\n')}`);
    assert.equal(idle.filter((m) => DELIVERY_CODE.test(m)), [], 'loaded before any delivery');
    const r = await runCli(['sendmail', '-C', site.configPath, 'someone@remote.example'], { input: 'Subject: t\n\nhello\n' });
    assert.is(r.code, 0, r.stderr);
    await smarthost.waitForMessages(1, 15_000);
    const after = modulesOf(list, d.proc.pid!);
    assert.ok(after.includes('dist/src/deliver/smtp.js'), `the SMTP client is loaded once used:\n${after.join('\n')}`);
  } finally {
    await d.stop();
    await smarthost.close();
  }
});

test('a link-down while the first delivery waits for the transport module: interrupted, no connection', async () => {
  const smarthost = await startSmarthost();
  const site = await makeSite();
  site.route('out', smarthostRoute(smarthost.port));
  const config = loadConfig(site.configPath);
  const route = loadRoutes(config.configDir).find((r) => r.name === 'out')!;
  const t = createTransport(route, config.hostname);
  const env = { envId: 'e1', msgid: 'm1', recipient: 'b@remote.example', sender: 'a@here.example', size: 10 } as Envelope;
  const job = { msgid: 'm1', sender: 'a@here.example', size: 10, recipients: [env], body: () => Readable.from(['Subject: t\r\n\r\nx\r\n']) };
  try {
    const first = t.deliver(job);
    t.interrupt!('link down (test)');
    const r = (await first).get('e1')!;
    assert.is(r.outcome, 'interrupted', r.message);
    assert.match(r.message, /link down \(test\)/);
    // Loaded now: the next delivery goes out, and only it connected.
    const next = (await t.deliver(job)).get('e1')!;
    assert.is(next.outcome, 'ok', next.message);
    await waitFor('one message', () => smarthost.messages.length === 1, 10_000);
    assert.is(smarthost.connections, 1);
  } finally {
    await t.close();
    await smarthost.close();
  }
});

test.run();
