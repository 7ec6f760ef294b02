// Never lose an accepted message: kill -9 the daemon in the middle of a stream of messages;
// every message that got a 250 must be delivered after a restart.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

/** One client connection sending numbered messages until told to stop; records 250s. */
async function sender(port: number, prefix: string, acked: Set<string>, stop: { now: boolean }): Promise<void> {
  let c: RawSmtp;
  try {
    c = await RawSmtp.connect(port);
    await c.hello();
  } catch {
    return;
  }
  try {
    for (let i = 0; !stop.now; i++) {
      const tag = `${prefix}-${i}`;
      if (!(await c.cmd('MAIL FROM:<load@tidemail.test>')).startsWith('250')) return;
      if (!(await c.cmd('RCPT TO:<sink@remote.example>')).startsWith('250')) return;
      if (!(await c.cmd('DATA')).startsWith('354')) return;
      c.write(`Subject: ${tag}\r\nX-Tag: ${tag}\r\n\r\n${('x'.repeat(98) + '\r\n').repeat(20)}.\r\n`);
      const r = await c.reply();
      if (r.startsWith('250')) acked.add(tag);
    }
  } catch {
    /* the daemon died under us: expected */
  } finally {
    c.close();
  }
}

test('kill -9 during a stream of messages loses none that got 250', async () => {
  const sh = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  const acked = new Set<string>();
  const stop = { now: false };
  const clients = Array.from({ length: 8 }, (_, i) => sender(site.port, `c${i}`, acked, stop));
  await waitFor('150 acknowledged messages', () => acked.size >= 150, 30_000, 5);
  await d.kill9();
  stop.now = true;
  await Promise.all(clients);
  assert.ok(acked.size >= 150);

  const d2 = await startDaemon(site);
  try {
    const tags = () => new Set(sh.messages.map((m) => /X-Tag: (\S+)/.exec(m.raw.toString())?.[1]));
    await waitFor('every acknowledged message at the smarthost', () => [...acked].every((t) => tags().has(t)), 30_000, 100);
    const missing = [...acked].filter((t) => !tags().has(t));
    assert.equal(missing, []);
  } finally {
    await d2.stop();
    await sh.close();
  }
});

test('kill -9 while the queue is being delivered: everything queued arrives after restart', async () => {
  const sh = await startSmarthost();
  const site = await makeSite();
  // No route yet: messages pile up in the queue.
  const d = await startDaemon(site);
  const acked = new Set<string>();
  const stop = { now: false };
  const clients = Array.from({ length: 4 }, (_, i) => sender(site.port, `q${i}`, acked, stop));
  await waitFor('200 queued', () => acked.size >= 200, 30_000, 5);
  stop.now = true;
  await Promise.all(clients);
  site.route('isp', smarthostRoute(sh.port));
  d.proc.kill('SIGHUP');
  try {
    await waitFor('delivery under way', () => sh.messages.length >= 20, 20_000, 5);
  } finally {
    await d.kill9();
  }
  const d2 = await startDaemon(site);
  try {
    const tags = () => new Set(sh.messages.map((m) => /X-Tag: (\S+)/.exec(m.raw.toString())?.[1]));
    await waitFor('all queued messages delivered', () => [...acked].every((t) => tags().has(t)), 30_000, 100);
  } finally {
    await d2.stop();
    await sh.close();
  }
});

test.run();
