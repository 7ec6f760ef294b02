// What an idle daemon has loaded (issue 17: every module loaded at start stays in its RSS for as
// long as it runs). A CommonJS preload writes node's builtin module list when sent SIGUSR2;
// the daemon, configured with an https alert URL and nothing to alert about, must not have
// loaded http, https or zlib: they load at the first POST or the first use.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon } from './helpers/daemon.js';
import { waitFor } from './helpers/ports.js';
import { cleanupTmp, tmpDir } from './helpers/tmp.js';

test.after(() => cleanupTmp());

/** Builtins an idle daemon does not need (http+https were ~1.3 MB of its RSS). */
const NOT_AT_IDLE = ['http', 'https', 'zlib'];

test('an idle daemon with an https alert URL has not loaded http, https or zlib', async () => {
  const dir = tmpDir();
  const out = path.join(dir, 'builtins.json');
  const preload = path.join(dir, 'record.cjs');
  fs.writeFileSync(preload, `process.on('SIGUSR2', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify(process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)))));\n`);
  // The daemon drops to nobody before the signal comes: the file must be writable by it.
  fs.writeFileSync(out, '');
  fs.chmodSync(out, 0o666);
  const site = await makeSite('[alerts]\nmail_waiting = "4h"\ninterval = "1s"\nurl = "https://127.0.0.1:9/hook"\n');
  const d = await startDaemon(site, { NODE_OPTIONS: `--require ${preload}` });
  try {
    d.proc.kill('SIGUSR2');
    const builtins = await waitFor('builtin list', () => (fs.readFileSync(out, 'utf8') ? (JSON.parse(fs.readFileSync(out, 'utf8')) as string[]) : null), 10_000);
    assert.ok(builtins.includes('net'), `the list is the daemon's: ${builtins.join(' ')}`);
    const loaded = NOT_AT_IDLE.filter((m) => builtins.includes(m));
    assert.equal(loaded, [], `the idle daemon loaded ${loaded.join(', ')}`);
  } finally {
    await d.stop();
  }
});

test.run();
