// Route schedules: extra flush times from a cron expression, and a clear error for a bad one.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('a schedule flushes deferred mail of its route without waiting for the retry time', async () => {
  const port = await freePort();
  const site = await makeSite('[queue]\nretry_min = "1h"');
  // node-cron's six-field form: every second, so the test need not wait a minute.
  site.route('isp', smarthostRoute(port, 'schedule = "* * * * * *"'));
  const d = await startDaemon(site);
  try {
    await sendMessage(site.port, 'a@tidemail.test', ['s@remote.example'], 'Subject: s\r\n\r\nx\r\n');
    await d.waitForLog(/deferred to=<s@remote\.example>/);
    const sh = await startSmarthost({ port });
    try {
      await sh.waitForMessages(1, 5000);
      await d.waitForLog(/scheduled flush route=isp/);
    } finally {
      await sh.close();
    }
  } finally {
    await d.stop();
  }
});

test('an invalid schedule is a configuration error with file:line', async () => {
  const site = await makeSite();
  site.route('isp', smarthostRoute(2525, 'schedule = "61 * * * *"'));
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  assert.equal(r.code, 78);
  assert.match(r.stderr, /routes\/isp\.toml:\d+: 'schedule' "61 \* \* \* \*" is not a valid cron expression/);
  assert.match(r.stderr, /fix: /);
});

test.run();
