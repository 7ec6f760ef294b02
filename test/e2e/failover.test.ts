// Failover between routes (issue 14): mail accepted while every route is offline waits for
// the preferred one; when another matching route comes online — its detector, or
// `tidemail link up` — the mail goes by it at once, not at the next no_route_recheck (1 h here).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

async function failover(bringUp: (flag: string, configPath: string) => Promise<void>): Promise<void> {
  const isp = await startSmarthost();
  const backup = await startSmarthost();
  const dir = tmpDir();
  const site = await makeSite('[queue]\nno_route_recheck = "1h"\nretry_min = "1h"');
  site.route('isp', `smarthost = "127.0.0.1:${isp.port}"\ntls = "none"\nonline.file = "${path.join(dir, 'isp.up')}"\n`);
  site.route('backup', `smarthost = "127.0.0.1:${backup.port}"\ntls = "none"\npriority = 200\nonline.file = "${path.join(dir, 'backup.up')}"\n`);
  const d = await startDaemon(site);
  try {
    const r = await sendMessage(site.port, 'me@tidemail.test', ['you@remote.example'], 'Subject: failover\r\n\r\nhello\r\n');
    assert.match(r, /^250 /);
    // Routed (and found waiting for isp) before the backup comes up.
    await waitFor('the mail waiting for route isp', async () => /route isp is offline/.test((await runCli(['mailq', '--config', site.configPath])).stdout), 10_000, 100);
    await bringUp(path.join(dir, 'backup.up'), site.configPath);
    const [m] = await backup.waitForMessages(1, 5000);
    assert.equal(m!.to, ['you@remote.example']);
    assert.equal(isp.messages.length, 0);
    // The smarthost has it before the daemon has read the 250 and logged it.
    await d.waitForLog(/delivered[^\n]*route=backup/, 5000);
  } finally {
    await d.stop();
    await isp.close();
    await backup.close();
  }
}

test('the preferred route stays down, the backup comes up (online.file): delivered by the backup at once', async () => {
  await failover(async (flag) => fs.writeFileSync(flag, ''));
});

test('the backup is brought up by `tidemail link up backup`: delivered by it at once', async () => {
  await failover(async (_flag, configPath) => {
    const r = await runCli(['link', 'up', 'backup', '--config', configPath]);
    assert.equal(r.code, 0, r.stderr);
  });
});

test('mail deferred on a route (its smarthost unreachable) is retried the moment its link comes back, not after retry_min', async () => {
  const dir = tmpDir();
  const flag = path.join(dir, 'isp.up');
  fs.writeFileSync(flag, '');
  const port = await freePort(); // nothing listens yet: the first attempt is refused
  const site = await makeSite('[queue]\nretry_min = "1h"\nretry_max = "4h"');
  site.route('isp', `smarthost = "127.0.0.1:${port}"\ntls = "none"\nonline.file = "${flag}"\n`);
  const d = await startDaemon(site);
  let sh: Awaited<ReturnType<typeof startSmarthost>> | null = null;
  try {
    await sendMessage(site.port, 'me@tidemail.test', ['later@remote.example'], 'Subject: deferred\r\n\r\nhello\r\n');
    await d.waitForLog(/deferred to=<later@remote\.example>/, 10_000);
    // The link drops and comes back; by now the smarthost answers.
    fs.rmSync(flag);
    await d.waitForLog(/link down route=isp/, 10_000);
    sh = await startSmarthost({ port });
    const t0 = Date.now();
    fs.writeFileSync(flag, '');
    const [m] = await sh.waitForMessages(1, 10_000);
    assert.equal(m!.to, ['later@remote.example']);
    assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms after link up`);
    assert.is(sh.messages.length, 1);
  } finally {
    await d.stop();
    await sh?.close();
  }
});

test.run();
