// The alert monitor the daemon starts with does not load http, https or tls (issue 17: every
// module loaded at start stays in the daemon's RSS; http+https were ~1.3 MB of it). They load
// at the first POST (notify.test.ts and alerts.test.ts post for real). A fresh node imports the
// compiled monitor, as the daemon does, and lists node's builtin modules.

import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO } from '../helpers/daemon.js';

const NOT_AT_START = ['http', 'https', 'tls'];

test('importing the alert monitor loads neither http, https nor tls', () => {
  const monitor = pathToFileURL(path.join(REPO, 'dist', 'src', 'alerts', 'monitor.js')).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(monitor)});
console.log(JSON.stringify(process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13))));`], { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 0, r.stderr);
  const builtins = JSON.parse(r.stdout) as string[];
  assert.ok(builtins.includes('child_process'), `the list is after the import: ${builtins.join(' ')}`);
  const loaded = NOT_AT_START.filter((m) => builtins.includes(m));
  assert.equal(loaded, [], `the alert monitor loaded ${loaded.join(', ')} at import`);
});

test.run();
