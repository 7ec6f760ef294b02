// How the runner picks up new mail (issue 17): a recipient with no usable route is stored as
// waiting in the message's own commit (DeliveryRunner.waitingAt), so no pass loads it only to
// write that down; a route that is up, a reload or a link coming up still send it at once, and
// the recheck time still holds when nothing else is queued. Real SQLite, real SMTP on loopback.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { DeliveryRunner } from '../../src/deliver/runner.js';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import { loadRoutes } from '../../src/routes/load.js';
import type { RouteProfile } from '../../src/routes/profile.js';
import { makeSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/** Commits one message the way the intake does, asking the runner at commit; returns its id and how many were stored waiting. */
async function newMail(store: SqliteQueueStore, runner: DeliveryRunner, to: string): Promise<{ id: string; waiting: number }> {
  const s = store.openMessage();
  await s.write(Buffer.from('Subject: t\r\n\r\nx\r\n'));
  let waiting = 0;
  const sender = 'a@here.example';
  await s.commit({ sender, recipients: [to], via: 'test', waitingAt: (r) => { const w = runner.waitingAt(sender, r); if (w) waiting++; return w; } });
  if (waiting < 1) runner.wake(); // as the daemon's committed() does
  return { id: s.msgid, waiting };
}

test('no route: stored waiting at commit (not due, the reason recorded); a reload with a route sends it at once', async () => {
  const site = await makeSite();
  const config = loadConfig(site.configPath);
  const store = await SqliteQueueStore.open(config.stateDir, Date.now);
  const runner = new DeliveryRunner(store, config, [], () => true, null);
  const smarthost = await startSmarthost();
  try {
    const { id, waiting } = await newMail(store, runner, 'b@remote.example');
    assert.is(waiting, 1);
    const [e] = (await store.getMessage(id))!.recipients;
    assert.is(e!.lastError, 'no route configured (add a file under routes/)');
    assert.is(e!.attempts, 0);
    assert.ok(e!.nextAttempt >= Date.now() + config.queue.noRouteRecheckMs - 60_000, 'due at the recheck, not now');
    assert.equal(await store.due(Date.now(), 10), []);
    assert.equal(await store.countByRoute(), { '*': 1 });
    site.route('isp', smarthostRoute(smarthost.port));
    await runner.reconfigure(config, loadRoutes(config.configDir));
    const [m] = await smarthost.waitForMessages(1);
    assert.equal(m!.to, ['b@remote.example']);
    await waitFor('the delivered message gone from the queue', async () => ((await store.getMessage(id)) ? null : true));
  } finally {
    await runner.stop();
    await store.close();
    await smarthost.close();
  }
});

test('a route that is up: delivery starts at once; its link down: waiting for that route, sent when the link comes up', async () => {
  const smarthost = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(smarthost.port));
  const config = loadConfig(site.configPath);
  let up = true;
  const store = await SqliteQueueStore.open(config.stateDir, Date.now);
  const runner = new DeliveryRunner(store, config, loadRoutes(config.configDir), () => up, null);
  try {
    const first = await newMail(store, runner, 'one@remote.example');
    assert.is(first.waiting, 0);
    await smarthost.waitForMessages(1);
    up = false;
    const second = await newMail(store, runner, 'two@remote.example');
    assert.is(second.waiting, 1);
    assert.equal(await store.countByRoute(), { isp: 1 });
    assert.is((await store.getMessage(second.id))!.recipients[0]!.lastError, 'route isp is offline');
    // What the daemon does on link up (daemon.ts): release the waiting mail, wake the runner.
    up = true;
    await store.releaseWaiting(null);
    runner.wake();
    const got = await smarthost.waitForMessages(2);
    assert.equal(got.map((m) => m.to[0]), ['one@remote.example', 'two@remote.example']);
  } finally {
    await runner.stop();
    await store.close();
    await smarthost.close();
  }
});

test('new waiting mail in an empty queue is looked at again at no_route_recheck, with no other wake-up', async () => {
  const site = await makeSite('[queue]\nno_route_recheck = "1s"');
  const config = loadConfig(site.configPath);
  const store = await SqliteQueueStore.open(config.stateDir, Date.now);
  const routes: RouteProfile[] = [];
  const runner = new DeliveryRunner(store, config, routes, () => true, null);
  try {
    // The daemon's first pass finds nothing and arms no timer.
    await runner.drain();
    const { id, waiting } = await newMail(store, runner, 'b@remote.example');
    assert.is(waiting, 1);
    const stored = (await store.getMessage(id))!.recipients[0]!.nextAttempt;
    // Only a pass records a later recheck time: the runner's own timer must have run one.
    const later = await waitFor('a pass at the recheck time', async () => {
      const t = (await store.getMessage(id))!.recipients[0]!.nextAttempt;
      return t > stored ? t : null;
    }, 10_000);
    assert.ok(later > stored);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test.run();
