// Reply deadlines (src/deliver/smtp-deadline.ts) through the real daemon: a scripted smarthost
// that drip-feeds one reply a byte at a time must not pin a delivery. With short configured
// deadlines the delivery ends within them, the socket is cut, the message is deferred (never
// bounced), and the log says which reply was too slow.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mailqWhen, makeSite, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { startScriptedSmtp, type Script, type ScriptedPeer, type Reply } from '../helpers/scripted-smtp.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

const running: { stop(): Promise<unknown> }[] = [];
test.after.each(async () => {
  for (const r of running.splice(0).reverse()) await r.stop();
});
test.after(() => cleanupTmp());

/** A reply that would take 60 s in full: 300 bytes, one every 200 ms. */
const SLOW = (text: string): Reply => ({ drip: `${text} ${'x'.repeat(300)}`, everyMs: 200 });

async function setup(script: Script, routeExtra: string, greeting?: Reply): Promise<{ peer: ScriptedPeer; d: RunningDaemon; config: string }> {
  const peer = await startScriptedSmtp(script, greeting);
  running.push({ stop: () => peer.close() });
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', `smarthost = "127.0.0.1:${peer.port}"\ntls = "none"\n${routeExtra}\n`);
  const d = await startDaemon(site);
  running.push(d);
  return { peer, d, config: site.configPath };
}

/** Sends one message; returns when the daemon logged its deferral, and how long that took. */
async function deferredAfter(ctx: { d: RunningDaemon }, to: string): Promise<{ ms: number; line: string }> {
  const t0 = Date.now();
  const r = await sendMessage(ctx.d.site.port, 'a@tidemail.test', [to], 'Subject: slow\r\n\r\nx\r\n');
  assert.match(r, /^250/);
  const m = await ctx.d.waitForLog(new RegExp(`deferred to=<${to.replace(/[.@]/g, '\\$&')}>.*`), 20_000);
  return { ms: Date.now() - t0, line: m[0] };
}

test('a RCPT reply drip-fed a byte every 200 ms: deferred after rcpt_timeout (1 s), socket cut, clear log line', async () => {
  const ctx = await setup((cmd) => (/^RCPT/i.test(cmd) ? SLOW('250 2.1.5') : null), 'rcpt_timeout = "1s"');
  const { ms, line } = await deferredAfter(ctx, 'r@remote.example');
  assert.match(line, /smarthost 127\.0\.0\.1:\d+ drip-fed its reply to RCPT TO: no full reply within 1 s \(rcpt_timeout\)/);
  assert.ok(ms < 6_000, `took ${ms} ms`);
  await waitFor('the peer to see its connection cut', () => ctx.peer.closed === ctx.peer.connections);
  assert.not.match(ctx.d.logs(), /bounced/);
  // DATA is pipelined with RCPT, but no message text may follow a RCPT that was never answered.
  assert.not.ok(ctx.peer.commands.includes('.'), 'sent the message after a RCPT without a reply');
  const q = await mailqWhen(ctx.config, 'the reason', (out) => /drip-fed its reply to RCPT TO/.test(out));
  assert.match(q, /r@remote\.example/);
});

test('the reply after the final "." drip-fed: deferred after data_done_timeout, not bounced', async () => {
  const ctx = await setup((cmd) => (cmd === '.' ? SLOW('250 2.0.0') : null), 'data_done_timeout = "1s"');
  const { ms, line } = await deferredAfter(ctx, 'd@remote.example');
  assert.match(line, /drip-fed its reply to the end of the message data: no full reply within 1 s \(data_done_timeout\)/);
  assert.ok(ms < 6_000, `took ${ms} ms`);
  assert.not.match(ctx.d.logs(), /bounced/);
});

test('a greeting drip-fed: deferred after greeting_timeout', async () => {
  const ctx = await setup(() => null, 'greeting_timeout = "1s"', SLOW('220'));
  const { ms, line } = await deferredAfter(ctx, 'g@remote.example');
  assert.match(line, /drip-fed its reply to the connection \(greeting\): no full reply within 1 s \(greeting_timeout\)/);
  assert.ok(ms < 6_000, `took ${ms} ms`);
});

test('a silent MAIL reply says "sent no reply", not "drip-fed"', async () => {
  const ctx = await setup((cmd) => (/^MAIL/i.test(cmd) ? { drip: '', everyMs: 60_000 } : null), 'mail_timeout = "1s"');
  const { line } = await deferredAfter(ctx, 'm@remote.example');
  assert.match(line, /sent no reply to MAIL FROM within 1 s \(mail_timeout\)/);
});

test('every reply just inside its own deadline, the whole delivery over transaction_timeout: deferred', async () => {
  // Each reply takes ~0.8 s (8 bytes, 100 ms apart): under the 5 s per-reply limits; six of them are over 2 s.
  const slowish = (text: string): Reply => ({ drip: text.padEnd(8, ' '), everyMs: 100 });
  const ctx = await setup((cmd) => slowish(cmd === '.' ? '250 ok' : /^DATA/i.test(cmd) ? '354 go' : /^EHLO/i.test(cmd) ? '250 hi' : '250 ok'),
    'helo_timeout = "5s"\nmail_timeout = "5s"\nrcpt_timeout = "5s"\ntransaction_timeout = "2s"', slowish('220 hi'));
  const { ms, line } = await deferredAfter(ctx, 't@remote.example');
  assert.match(line, /did not complete the delivery within 2 s \(transaction_timeout\)/);
  assert.ok(ms < 7_000, `took ${ms} ms`);
  assert.not.match(ctx.d.logs(), /bounced/);
});

test.run();
