// The runner and the store read one clock that is passed in (issue 15 §5): back-off, the first
// attempt and the lifetime all follow it, so five days in the queue take no five days here. Real
// SQLite file, real TCP to a port nobody listens on.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { DeliveryRunner } from '../../src/deliver/runner.js';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import { loadRoutes } from '../../src/routes/load.js';
import { makeSite } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { smarthostRoute } from '../helpers/smarthost.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('back-off, first attempt and expiry follow the clock given to the store and the runner, not the wall clock', async () => {
  const site = await makeSite('[queue]\nretry_min = "10m"\nretry_max = "1h"\nmax_lifetime = "5d"\ndelay_warning = "0"');
  site.route('isp', smarthostRoute(await freePort()));
  const config = loadConfig(site.configPath);
  let t = Date.UTC(2026, 0, 1);
  const clock = () => t;
  const store = await SqliteQueueStore.open(config.stateDir, clock);
  const runner = new DeliveryRunner(store, config, loadRoutes(config.configDir), () => true, null, clock);
  try {
    const s = store.openMessage();
    await s.write(Buffer.from('Subject: t\r\n\r\nx\r\n'));
    await s.commit({ sender: 'a@remote.example', recipients: ['b@remote.example'], via: 'test' });
    const start = t;
    await runner.drain();
    let [e] = (await store.getMessage(s.msgid))!.recipients;
    assert.equal([e!.attempts, e!.firstAttempt, e!.nextAttempt], [1, start, start + 10 * 60_000], e!.lastError ?? '');
    // Not due yet by the clock: a pass leaves it alone.
    t += 9 * 60_000;
    await runner.drain();
    [e] = (await store.getMessage(s.msgid))!.recipients;
    assert.is(e!.attempts, 1);
    t += 60_000;
    await runner.drain();
    [e] = (await store.getMessage(s.msgid))!.recipients;
    assert.equal([e!.attempts, e!.firstAttempt, e!.nextAttempt], [2, start, t + 20 * 60_000]);
    // Five days later by this clock the next failure bounces: the original goes, its DSN is queued.
    t = start + 5 * 86_400_000;
    await runner.drain();
    const left = await store.listMessages();
    assert.is(await store.getMessage(s.msgid), undefined);
    assert.equal(left.map((m) => [m.sender, m.via, m.created, m.recipients[0]!.recipient]), [['', 'bounce', t, 'a@remote.example']]);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test.run();
