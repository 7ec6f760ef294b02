// mailq, `tidemail queue …`, mailrm and runq against a real queue: once through a running
// daemon's control socket, once with the daemon stopped (straight on the SQLite file).
// Messages are deferred by pointing the route at a closed port with a long retry time, then
// the smarthost appears on that port.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type CliResult, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { freePort, sleep, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

const running: { stop(): Promise<unknown> }[] = [];
const smarthosts: Smarthost[] = [];
test.after.each(async () => {
  // Daemons first: a smarthost waits for the daemon's pooled connection before it closes.
  for (const r of running.splice(0).reverse()) await r.stop();
  for (const sh of smarthosts.splice(0)) await sh.close();
});
test.after(() => cleanupTmp());

interface Queued {
  id: string;
  rcpt: string;
  sender: string;
}

/** A daemon whose route points at a closed port, with `n` messages deferred in its queue. */
async function deferredQueue(n: number): Promise<{ site: TestSite; d: RunningDaemon; port: number; msgs: Queued[] }> {
  const port = await freePort();
  const site = await makeSite('[queue]\nretry_min = "1h"\nretry_max = "2h"');
  site.route('isp', smarthostRoute(port));
  const d = await startDaemon(site);
  running.push(d);
  const msgs: Queued[] = [];
  for (let i = 0; i < n; i++) {
    const m = { rcpt: `r${i}-${process.pid}@remote.example`, sender: `s${i}@tidemail.test`, id: '' };
    const reply = await sendMessage(site.port, m.sender, [m.rcpt], `Subject: queued ${i}\r\n\r\n${('body '.repeat(100) + '\r\n').repeat(i + 1)}`);
    m.id = /queued as ([0-9A-F]{16})/.exec(reply)?.[1] ?? '';
    assert.ok(m.id, reply);
    msgs.push(m);
  }
  for (const m of msgs) await d.waitForLog(new RegExp(`deferred to=<${m.rcpt}>`));
  return { site, d, port, msgs };
}

async function smarthostOn(port: number): Promise<Smarthost> {
  const sh = await startSmarthost({ port });
  smarthosts.push(sh);
  return sh;
}

const cli = (site: TestSite, args: string[], argv0?: string) => runCli([...args, '--config', site.configPath], { argv0 });
const sendmailBp = (site: TestSite) => runCli(['-C', site.configPath, '-bp'], { argv0: 'sendmail' });

/** mailq's output; a failing mailq fails the test with its stderr. */
async function mailq(site: TestSite): Promise<string> {
  const r = await cli(site, [], 'mailq');
  assert.is(r.code, 0, `mailq exited ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The lines of one message's entry in mailq output (from its id line to the blank line). */
function entryOf(out: string, id: string): string | null {
  const start = out.indexOf(id);
  if (start < 0) return null;
  const end = out.indexOf('\n\n', start);
  return out.slice(start, end < 0 ? undefined : end);
}

function assertListed(r: CliResult, m: Queued, reason: RegExp): number {
  assert.is(r.code, 0, r.stderr);
  const e = entryOf(r.stdout, m.id);
  assert.ok(e, `${m.id} not in:\n${r.stdout}`);
  const head = new RegExp(`^${m.id}[ !]\\s+(\\d+) .*\\s${m.sender.replace(/\./g, '\\.')}$`, 'm').exec(e);
  assert.ok(head, `id/size/sender line missing:\n${e}`);
  assert.ok(e.includes(m.rcpt), `recipient missing:\n${e}`);
  assert.match(e, reason);
  return Number(head[1]);
}

async function assertStaysUndelivered(sh: Smarthost, rcpt: string): Promise<void> {
  await sleep(1000);
  assert.not.ok(sh.messages.some((x) => x.to.includes(rcpt)), `${rcpt} was delivered`);
}

const delivered = (sh: Smarthost, rcpt: string) => waitFor(`delivery to ${rcpt}`, () => sh.messages.find((x) => x.to.includes(rcpt)), 10_000);

test('daemon running: mailq shows id, size, sender, recipient and why it is deferred; hold/release/remove/runq work through the socket', async () => {
  const { site, port, msgs } = await deferredQueue(3);
  const [held, plain, gone] = msgs as [Queued, Queued, Queued];
  const cannot = /\(cannot connect to 127\.0\.0\.1:\d+/;

  const q = await cli(site, [], 'mailq');
  const sizes = msgs.map((m) => assertListed(q, m, cannot));
  assert.ok(sizes[0]! < sizes[1]! && sizes[1]! < sizes[2]!, `sizes do not follow the bodies: ${sizes}`);
  assert.match(q.stdout, /-- \d+ Kbytes in 3 Requests\./);
  for (const r of await Promise.all([cli(site, ['queue', 'list']), cli(site, ['mailq']), sendmailBp(site)])) assertListed(r, plain, cannot);

  const show = await cli(site, ['queue', 'show', plain.id]);
  assert.is(show.code, 0, show.stderr);
  assert.match(show.stdout, new RegExp(`Queue ID: ${plain.id}`));
  assert.match(show.stdout, new RegExp(`Sender: +<${plain.sender}>`));
  assert.match(show.stdout, new RegExp(`Size: +${sizes[1]} bytes`));
  assert.match(show.stdout, new RegExp(`${plain.id}0000 <${plain.rcpt}> queued, 1 attempt`));
  assert.match(show.stdout, /last error: cannot connect/);

  const h = await cli(site, ['queue', 'hold', held.id]);
  assert.is(h.code, 0, h.stderr);
  assert.match(h.stdout, new RegExp(`${held.id}: held`));
  const afterHold = await cli(site, [], 'mailq');
  assertListed(afterHold, held, /\(on hold\)/);
  assert.match(afterHold.stdout, new RegExp(`^${held.id}!`, 'm'));

  const rm = await cli(site, [gone.id], 'mailrm');
  assert.is(rm.code, 0, rm.stderr);
  assert.not.ok(entryOf(await mailq(site), gone.id), 'removed message still listed');

  // The smarthost is back: a queue run delivers everything except the held message.
  const sh = await smarthostOn(port);
  const run = await cli(site, [], 'runq');
  assert.is(run.code, 0, run.stderr);
  const m = await delivered(sh, plain.rcpt);
  assert.is(m.raw.length, sizes[1], 'mailq size is not the message size');
  await assertStaysUndelivered(sh, held.rcpt);
  assert.not.ok(sh.messages.some((x) => x.to.includes(gone.rcpt)), 'a removed message was delivered');
  assertListed(await cli(site, [], 'mailq'), held, /\(on hold\)/);

  const rel = await cli(site, ['queue', 'release', held.id]);
  assert.is(rel.code, 0, rel.stderr);
  assert.match(rel.stdout, new RegExp(`${held.id}: released`));
  await delivered(sh, held.rcpt);
  await waitFor('empty queue', async () => /Mail queue is empty/.test(await mailq(site)), 5000);
});

test('daemon running: requeue makes a deferred message due now', async () => {
  const { site, port, msgs } = await deferredQueue(1);
  const sh = await smarthostOn(port);
  await assertStaysUndelivered(sh, msgs[0]!.rcpt); // retry is an hour away
  const r = await cli(site, ['queue', 'requeue', msgs[0]!.id]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /requeued/);
  await delivered(sh, msgs[0]!.rcpt);
});

test('unknown ids exit 66 (EX_NOINPUT), malformed ids 64 — with and without the daemon', async () => {
  const { site, d, msgs } = await deferredQueue(1);
  const unknown = 'ABCDEF0123456789';
  const check = async (label: string) => {
    const subs = ['show', 'hold', 'release', 'requeue', 'remove'];
    const results = await Promise.all([
      ...subs.map((sub) => cli(site, ['queue', sub, unknown])),
      cli(site, [unknown], 'mailrm'),
    ]);
    results.forEach((r, i) => {
      assert.is(r.code, 66, `${label} ${subs[i] ?? 'mailrm'}: ${r.code} ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`no message ${unknown}`));
    });
    const bad = await Promise.all(subs.map((sub) => cli(site, ['queue', sub, 'not-an-id'])));
    bad.forEach((r, i) => assert.is(r.code, 64, `${label} ${subs[i]} malformed: ${r.code} ${r.stderr}`));
    assert.ok(entryOf(await mailq(site), msgs[0]!.id), 'the real message was touched');
  };
  await check('daemon');
  await d.stop();
  await check('no daemon');
  // mailrm with one unknown id among real ones: the real one is removed, the exit code says 66.
  const mr = await cli(site, [unknown, msgs[0]!.id], 'mailrm');
  assert.is(mr.code, 66);
  assert.match(await mailq(site), /Mail queue is empty/);
});

test('daemon stopped: mailq, show, hold, remove, release and runq work directly on the queue file', async () => {
  const { site, d, port, msgs } = await deferredQueue(3);
  const [held, plain, gone] = msgs as [Queued, Queued, Queued];
  await d.stop();
  const cannot = /\(cannot connect to 127\.0\.0\.1:\d+/;

  const [q, bp, list, show] = await Promise.all([cli(site, [], 'mailq'), sendmailBp(site), cli(site, ['queue', 'list']), cli(site, ['queue', 'show', plain.id])]);
  for (const m of msgs) assertListed(q, m, cannot);
  assertListed(bp, plain, cannot);
  assertListed(list, plain, cannot);
  assert.is(show.code, 0, show.stderr);
  assert.match(show.stdout, new RegExp(`<${plain.rcpt}> queued, 1 attempt`));

  assert.is((await cli(site, ['queue', 'hold', held.id])).code, 0);
  assertListed(await cli(site, [], 'mailq'), held, /\(on hold\)/);
  const rm = await cli(site, ['queue', 'remove', gone.id]);
  assert.is(rm.code, 0, rm.stderr);
  assert.match(rm.stdout, new RegExp(`${gone.id}: removed`));
  assert.not.ok(entryOf(await mailq(site), gone.id));

  // runq without a daemon delivers in its own process; the held message stays.
  const sh = await smarthostOn(port);
  const run = await cli(site, [], 'runq');
  assert.is(run.code, 0, run.stderr);
  assert.match(run.stdout, /queue run done; 1 message\(s\) still queued/);
  await delivered(sh, plain.rcpt);
  assert.not.ok(sh.messages.some((x) => x.to.includes(held.rcpt) || x.to.includes(gone.rcpt)));
  assertListed(await cli(site, [], 'mailq'), held, /\(on hold\)/);

  const rel = await cli(site, ['queue', 'release', held.id]);
  assert.is(rel.code, 0, rel.stderr);
  const run2 = await cli(site, ['queue', 'flush']);
  assert.is(run2.code, 0, run2.stderr);
  await delivered(sh, held.rcpt);
  await waitFor('empty queue', async () => /Mail queue is empty/.test(await mailq(site)), 5000);
  assert.is(sh.messages.length, 2);
});

test('daemon stopped: sendmail mail waits in the maildrop, mailq says so, runq delivers it', async () => {
  const sh = await startSmarthost();
  smarthosts.push(sh);
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  for (const n of [1, 2]) {
    const r = await runCli(['-C', site.configPath, `w${n}@remote.example`], { argv0: 'sendmail', input: `Subject: wait ${n}\n\nx\n` });
    assert.is(r.code, 0, r.stderr);
  }
  const q = await cli(site, [], 'mailq');
  assert.is(q.code, 0, q.stderr);
  assert.match(q.stdout, /Mail queue is empty; 2 message\(s\) wait in the maildrop/);
  const run = await cli(site, [], 'runq');
  assert.is(run.code, 0, run.stderr);
  await sh.waitForMessages(2);
  assert.equal(sh.messages.map((m) => m.to[0]).sort(), ['w1@remote.example', 'w2@remote.example']);
  assert.match(await mailq(site), /^Mail queue is empty\n$/);
});

test('sendmail -q runs the queue like runq', async () => {
  const { site, port, msgs } = await deferredQueue(1);
  const sh = await smarthostOn(port);
  const r = await runCli(['-C', site.configPath, '-q'], { argv0: 'sendmail' });
  assert.is(r.code, 0, r.stderr);
  await delivered(sh, msgs[0]!.rcpt);
});

test.run();
