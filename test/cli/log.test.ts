// `tidemail log ID|ADDRESS|--since`: a message's history from the queue database. A real daemon
// relays through a real smarthost that defers the first attempt (451) and accepts the second;
// the history must show where it came from, the refused attempt with the smarthost's reply, and
// the delivery — with the daemon running, and again after it stopped and the message left the queue.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { Db } from '../../src/queue/db.js';
import path from 'node:path';

const track = stopAfterEach(test);

const cli = (site: TestSite, args: string[]) => runCli(['log', ...args, '--config', site.configPath]);

/** Events are buffered for up to 250 ms, then ride along with the next commit: wait until `what` is in the history of `key`. */
const inHistory = (site: TestSite, key: string, what: RegExp) =>
  waitFor(`${what} in the history of ${key}`, async () => what.test((await cli(site, [key])).stdout), 10_000, 100);

/** A site whose smarthost defers the first DATA with 451 and refuses <nobody@…> with 550. */
async function deferringSite(extra = '', daemonArgs: NodeJS.ProcessEnv = {}) {
  let data = 0;
  const sh = await startSmarthost({
    dataReply: () => (++data === 1 ? '451 4.7.1 greylisted, come back later' : null),
    rcptReply: (a) => (a.startsWith('nobody@') ? '550 5.1.1 no such mailbox here' : null),
  });
  const site = await makeSite(`[queue]\nretry_min = "1s"\nretry_max = "2s"\n${extra}`);
  site.route('isp', smarthostRoute(sh.port));
  return { sh: track(sh), site, env: daemonArgs };
}

async function send(site: TestSite, from: string, to: string[]): Promise<string> {
  const reply = await sendMessage(site.port, from, to, `Subject: where did it go\r\n\r\nhello\r\n`);
  const id = /queued as ([0-9A-F]{16})/.exec(reply)?.[1];
  assert.ok(id, reply);
  return id!;
}

/** The event lines of the history, in order, as [event, fields]. */
function events(out: string): string[] {
  return out.split('\n').filter((l) => /^\s+\d{4}-\d\d-\d\d /.test(l)).map((l) => l.trim().replace(/^\S+ \S+\s+/, ''));
}

test('a deferred-then-delivered message: full history, with the daemon up and after it stopped', async () => {
  const { sh, site } = await deferringSite();
  const d = track(await startDaemon(site));
  const rcpt = `far-${process.pid}@remote.example`;
  const id = await send(site, 'alice@tidemail.test', [rcpt]);
  await sh.waitForMessages(1, 20_000);
  await d.waitForLog(new RegExp(`${id}\\w{4}: delivered`), 10_000);
  await inHistory(site, id, /delivered/);

  const check = (out: string) => {
    const ev = events(out);
    const i = ev.findIndex((e) => e.startsWith('accepted'));
    const j = ev.findIndex((e) => /deferred/.test(e));
    const k = ev.findIndex((e) => /delivered/.test(e));
    assert.ok(i >= 0 && j > i && k > j, `accepted → deferred → delivered expected, got:\n${out}`);
    assert.match(ev[i]!, /from=<alice@tidemail\.test>/);
    assert.match(ev[i]!, /client=127\.0\.0\.1/);
    assert.match(ev[i]!, /checks=relay,recipients,syntax/); // the in-session checks it passed
    assert.match(ev[j]!, new RegExp(`to=<${rcpt}>.*route=isp.*451 4\\.7\\.1 greylisted`));
    assert.match(ev[k]!, new RegExp(`to=<${rcpt}>.*route=isp.*result="?250`));
    assert.match(out, new RegExp(`=> <${rcpt}> delivered`));
  };
  const up = await cli(site, [id]);
  assert.is(up.code, 0, up.stderr);
  check(up.stdout);
  // By recipient id too.
  const byEnv = await cli(site, [`${id}0000`]);
  assert.is(byEnv.code, 0, byEnv.stderr);
  check(byEnv.stdout);

  await d.stop();
  const mailq = await runCli(['mailq', '--config', site.configPath]);
  assert.match(mailq.stdout, /empty/, 'the message has left the queue');
  const down = await cli(site, [id]);
  assert.is(down.code, 0, down.stderr);
  check(down.stdout);
  const json = await cli(site, [id, '--json']);
  const parsed = JSON.parse(json.stdout) as { msgid: string; events: { event: string }[] }[];
  assert.is(parsed[0]!.msgid, id);
  assert.ok(parsed[0]!.events.some((e) => e.event === 'delivered'));
});

test('lookup by address finds every message to or from it; --since limits by time', async () => {
  const { sh, site } = await deferringSite();
  const d = track(await startDaemon(site));
  const rcpt = `bob-${process.pid}@remote.example`;
  const first = await send(site, 'alice@tidemail.test', [rcpt]);
  await sh.waitForMessages(1, 20_000);
  await d.waitForLog(new RegExp(`${first}\\w{4}: delivered`), 10_000);
  await sleep(5000); // the clock must pass for --since 4s to leave the first message out
  const second = await send(site, 'carol@tidemail.test', [rcpt, 'nobody@remote.example']);
  await d.waitForLog(new RegExp(`${second}\\w{4}: bounced`), 10_000);
  await sh.waitForMessages(2, 20_000);
  await inHistory(site, '<Carol@tidemail.test>', new RegExp(`bounce queued .*for=${second}`));
  const recent = await cli(site, ['--since', '4s']);
  assert.is(recent.code, 0, recent.stderr);
  assert.ok(recent.stdout.includes(second), recent.stdout);
  assert.not.ok(recent.stdout.includes(first), `the first message is older than 4s:\n${recent.stdout}`);

  const byRcpt = await cli(site, [rcpt]);
  assert.is(byRcpt.code, 0, byRcpt.stderr);
  assert.ok(byRcpt.stdout.includes(first) && byRcpt.stdout.includes(second), byRcpt.stdout);
  const bySender = await cli(site, ['<Carol@tidemail.test>']);
  assert.is(bySender.code, 0, bySender.stderr);
  assert.ok(bySender.stdout.includes(second) && !bySender.stdout.includes(first), bySender.stdout);
  const byLocalPart = await cli(site, ['carol']);
  assert.is(byLocalPart.code, 0, byLocalPart.stderr);
  assert.ok(byLocalPart.stdout.includes(second) && !byLocalPart.stdout.includes(first), byLocalPart.stdout);
  // The refused recipient bounced, and the bounce to the sender is part of the story.
  assert.match(bySender.stdout, /bounced .*to=<nobody@remote\.example>.*550 5\.1\.1/);
  assert.match(bySender.stdout, new RegExp(`bounce queued .*for=${second}`));

  const all = await cli(site, ['--since', '1h']);
  assert.ok(all.stdout.includes(first) && all.stdout.includes(second), all.stdout);

  const none = await cli(site, ['nobody-at-all@nowhere.example']);
  assert.is(none.code, 66, none.stdout);
  assert.match(none.stderr, /no history for <nobody-at-all@nowhere\.example>/);
  const bad = await cli(site, ['--since', 'soon']);
  assert.is(bad.code, 64, bad.stderr);
});

test('--log-level warn quiets stderr but the history is still kept; a bad level is a usage error', async () => {
  const { sh, site } = await deferringSite('[log]\nlevel = "debug"');
  const d = track(await startDaemon(site, {}, ['--log-level', 'warn']));
  const id = await send(site, 'alice@tidemail.test', [`q-${process.pid}@remote.example`]);
  await sh.waitForMessages(1, 20_000);
  await inHistory(site, id, /delivered/);
  assert.not.match(d.logs(), /accepted|deferred|delivered/, `info lines printed at --log-level warn:\n${d.logs()}`);
  const r = await cli(site, [id]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /accepted[\s\S]*deferred[\s\S]*delivered/);
  const bad = await runCli(['daemon', '--log-level', 'loud', '--config', site.configPath]);
  assert.is(bad.code, 64);
  assert.match(bad.stderr, /--log-level must be one of debug, info, warn, error/);
});

test('history older than 30 days is pruned when the daemon starts; newer history is kept', async () => {
  const site = await makeSite();
  const d = track(await startDaemon(site));
  await d.stop(); // creates the queue database
  const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'));
  const day = 86_400_000;
  await db.run(`INSERT INTO events (t, msgid, env_id, level, event, fields) VALUES (?, 'AAAAAAAAAAAA0001', NULL, 'info', 'accepted', 'from=<old@tidemail.test>'),
    (?, 'AAAAAAAAAAAA0002', NULL, 'info', 'accepted', 'from=<recent@tidemail.test>')`, [Date.now() - 31 * day, Date.now() - 29 * day]);
  await db.close();
  assert.is((await cli(site, ['AAAAAAAAAAAA0001'])).code, 0, 'the old event is there before the daemon starts');
  const again = track(await startDaemon(site));
  await waitFor('the old history pruned', async () => (await cli(site, ['AAAAAAAAAAAA0001'])).code === 66, 10_000, 100);
  await again.stop();
  const old = await cli(site, ['AAAAAAAAAAAA0001']);
  assert.is(old.code, 66, old.stdout);
  const recent = await cli(site, ['recent@tidemail.test']);
  assert.is(recent.code, 0, recent.stderr);
  assert.match(recent.stdout, /AAAAAAAAAAAA0002/);
});

test.run();
