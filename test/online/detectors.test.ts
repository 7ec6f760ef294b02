// Link detectors without root: a flag file (fs.watch), a command, and the manual override that
// link hooks use. Mail waits while offline and goes the moment the route comes online. "No
// attempt" is asserted once the runner has looked at the mail and recorded it as waiting for the
// route (the queue row), not after a fixed sleep.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import { stopAfterEach } from '../helpers/cleanup.js';
import * as assert from 'uvu/assert';
import { Db } from '../../src/queue/db.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

/** The runner has seen the mail for each of `to` and put it aside as waiting for `route`. */
async function recordedWaiting(site: TestSite, to: string[], route: string): Promise<void> {
  await waitFor(`${to.join(', ')} recorded as waiting for ${route}`, async () => {
    const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'), true);
    try {
      const rows = await db.all<{ waiting: string | null }>(`SELECT waiting FROM recipients WHERE address IN (${to.map(() => '?').join(', ')}) AND status = 'queued'`, to);
      return rows.length === to.length && rows.every((r) => r.waiting === route);
    } finally {
      await db.close();
    }
  }, 10_000, 100);
}

test('online.file: no flag, no attempt; the flag appears, mail goes at once; it goes away, mail waits', async () => {
  const sh = keep(await startSmarthost());
  const flags = tmpDir();
  const flag = path.join(flags, 'isp.online');
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', smarthostRoute(sh.port, `online.file = "${flag}"`));
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['a@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await recordedWaiting(site, ['a@remote.example'], 'isp');
  assert.equal(sh.connections, 0);
  fs.writeFileSync(flag, '');
  await sh.waitForMessages(1, 3000);
  fs.unlinkSync(flag);
  await d.waitForLog(/link down route=isp/);
  const before = sh.connections;
  await sendMessage(site.port, 'me@tidemail.test', ['b@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await recordedWaiting(site, ['b@remote.example'], 'isp');
  assert.equal(sh.connections, before);
  const st = await runCli(['status', '--config', site.configPath]);
  assert.match(st.stdout, /isp\s+offline/);
  assert.match(st.stdout, /isp\.online does not exist/);
});

test('online.command: exit 0 means up; `tidemail link up ROUTE` re-checks it and flushes', async () => {
  const sh = keep(await startSmarthost());
  const dir = tmpDir();
  const flag = path.join(dir, 'ok');
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', smarthostRoute(sh.port, `online.command = "test -e ${flag}"`));
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['c@remote.example'], 'Subject: c\r\n\r\nx\r\n');
  await recordedWaiting(site, ['c@remote.example'], 'isp');
  assert.equal(sh.connections, 0);
  fs.writeFileSync(flag, '');
  // The command is polled slowly (≥ 1 min); the hook makes it immediate.
  const r = await runCli(['link', 'up', 'isp', '--config', site.configPath]);
  assert.equal(r.code, 0, r.stderr);
  await sh.waitForMessages(1, 3000);
  await d.waitForLog(/link up route=isp/);
});

test('`tidemail link down ROUTE` holds an always-online route; `link up` releases it', async () => {
  const sh = keep(await startSmarthost());
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', smarthostRoute(sh.port));
  keep(await startDaemon(site));
  const down = await runCli(['link', 'down', 'isp', '--config', site.configPath]);
  assert.match(down.stdout, /isp: offline/);
  await sendMessage(site.port, 'me@tidemail.test', ['d@remote.example'], 'Subject: d\r\n\r\nx\r\n');
  await recordedWaiting(site, ['d@remote.example'], 'isp');
  assert.equal(sh.messages.length, 0);
  await runCli(['link', 'up', 'isp', '--config', site.configPath]);
  await sh.waitForMessages(1, 3000);
  const bad = await runCli(['link', 'up', 'nosuch', '--config', site.configPath]);
  assert.not.equal(bad.code, 0);
  assert.match(bad.stderr, /no route or interface named "nosuch"/);
});

test('idle and offline, the daemon makes no attempts and sets no short timers', async () => {
  const sh = keep(await startSmarthost());
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port, `online.file = "${path.join(tmpDir(), 'never')}"`));
  const d = keep(await startDaemon(site));
  for (let i = 0; i < 3; i++) await sendMessage(site.port, 'me@tidemail.test', [`i${i}@remote.example`], 'Subject: i\r\n\r\nx\r\n');
  await recordedWaiting(site, ['i0@remote.example', 'i1@remote.example', 'i2@remote.example'], 'isp');
  assert.equal(sh.connections, 0);
  // Waiting mail is looked at again only after no_route_recheck (1 h): check the queue says so.
  const q = await runCli(['queue', 'show', /queued as ([0-9A-F]{16})/.exec(d.logs())?.[1] ?? (await waitFor('id', () => /([0-9A-F]{16}): accepted/.exec(d.logs())?.[1])), '--config', site.configPath]);
  const next = /next (\S+)/.exec(q.stdout)?.[1];
  assert.ok(next && Date.parse(next) - Date.now() > 50 * 60_000, `next attempt too soon: ${next}`);
});

test.run();
