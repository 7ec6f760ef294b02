// Failover between routes (issue 14): mail accepted while every route is offline waits for
// the preferred one; when another matching route comes online — its detector, or
// `tidemail link up` — the mail goes by it at once, not at the next no_route_recheck (1 h here).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
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
    assert.match(d.logs(), /delivered[^\n]*route=backup/);
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

test.run();
