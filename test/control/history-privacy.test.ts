// `tidemail log` as an ordinary user (the public socket's `history`, src/control/commands.ts and
// src/queue/sender-view.ts): the user's own messages are selected before the row limit, so a busy
// queue does not crowd them out; and the sender sees per recipient they gave what happened, with
// remote servers' replies, but not where a local recipient's ~/.forward sends the mail (addresses,
// files, pipes) nor the recipient's paths. Root (reading the database) still sees everything.
// The sender is a uid with no passwd entry; the recipients are users made here.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Db } from '../../src/queue/db.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { makeUsers, removeUsers, writeAs } from '../helpers/system-users.js';
import { isRoot } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => removeUsers());

const USER = { uid: 54321, gid: 54321 }; // exists nowhere: the test does not depend on users
const log = (site: TestSite, args: string[], as?: typeof USER) => runCli(['log', ...args, '--config', site.configPath], as ?? {});
const msgid = (n: number) => `AAAAAAAA${n.toString(16).toUpperCase().padStart(8, '0')}`;

/** As a busy day leaves the history: `n` messages of root's, two events each, ten minutes ago. */
async function busyHistory(site: TestSite, n: number): Promise<void> {
  const db = await Db.open(path.join(site.stateDir, 'queue.sqlite'));
  const t = Date.now() - 600_000;
  const rows: string[] = [];
  for (let i = 0; i < n; i++) {
    rows.push(`(${t + i}, '${msgid(i)}', NULL, 'info', 'accepted', 'from=<root@tidemail.test> via=sendmail uid=0 nrcpt=1 size=300')`);
    rows.push(`(${t + i}, '${msgid(i)}', '${msgid(i)}0000', 'info', 'deferred', 'to=<far@remote.example> route=isp result="4.4.1 connection refused" attempts=1')`);
  }
  // A message from outside whose sender address says " uid=54321 " inside its quoted value.
  rows.push(`(${t - 1}, 'BBBBBBBBBBBB0001', NULL, 'info', 'accepted', 'from="<x uid=54321 y@evil.example>" via=smtp client=192.0.2.1 nrcpt=1 size=300')`);
  await db.exec(`BEGIN; INSERT INTO events (t, msgid, env_id, level, event, fields) VALUES ${rows.join(',\n')}; COMMIT;`);
  await db.close();
}

(isRoot() ? test : test.skip)('on a busy queue a user still gets the history of their own message (the limit counts their events)', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "127.0.0.1:9"\ntls = "none"\n');
  await (await startDaemon(site)).stop(); // creates the queue database
  await busyHistory(site, 6000); // 12 001 events: more than the 10 000 one answer reads
  const d = keep(await startDaemon(site));
  const sent = await runCli(['-C', site.configPath, 'far@remote.example'], { argv0: 'sendmail', input: 'Subject: mine\n\nx\n', ...USER });
  assert.equal(sent.code, 0, sent.stderr);
  const [, id] = await d.waitForLog(/([0-9A-F]{16}): accepted .*uid=54321/);
  for (const args of [['--since', '1h'], ['far@remote.example']]) {
    const started = Date.now();
    const r = await waitFor(`own message in log ${args.join(' ')}`, async () => {
      const x = await log(site, args, USER);
      return x.code === 0 && x.stdout.includes(id!) ? x : null;
    });
    console.log(`  tidemail log ${args.join(' ')} as a user over 12 001 events: ${Date.now() - started} ms`);
    assert.not.match(r.stdout, /AAAAAAAA/, 'root\'s messages');
    assert.not.match(r.stdout, /BBBBBBBBBBBB0001/, 'a uid inside a quoted value is not the uid field');
  }
  // Root still sees everyone's.
  const theirs = await log(site, [msgid(0)]);
  assert.is(theirs.code, 0, theirs.stderr);
  assert.match(theirs.stdout, /uid=0/);
});

(isRoot() ? test : test.skip)('the sender sees delivered/deferred/bounced per recipient they gave, not the local recipients\' forward targets, files, pipes or paths', async () => {
  const [bob, carol, dave] = makeUsers(3);
  // bob keeps a copy, forwards outside, saves to a file and pipes; carol's file is outside her home.
  writeAs(bob!, path.join(bob!.home, '.forward'), `\\${bob!.name}\nsecret-fwd@elsewhere.example\n${bob!.home}/saved-mail\n"|cat > ${bob!.home}/piped"\n`);
  writeAs(carol!, path.join(carol!.home, '.forward'), '/tmp/carol-outside-home\n');
  fs.rmSync(dave!.home, { recursive: true }); // dave's delivery fails for now, naming his home
  const site = await makeSite(`[local]\nforward = true\ndelivery = "maildir"\nmaildir = "~/Maildir"\n[queue]\nretry_min = "1h"\n`);
  site.route('isp', 'smarthost = "127.0.0.1:9"\ntls = "none"\n');
  const d = keep(await startDaemon(site));
  const rcpts = [bob!, carol!, dave!].map((u) => `${u.name}@tidemail.test`);
  const sent = await runCli(['-C', site.configPath, ...rcpts, 'far@remote.example'], { argv0: 'sendmail', input: 'Subject: to friends\n\nx\n', ...USER });
  assert.equal(sent.code, 0, sent.stderr);
  const [, id] = await d.waitForLog(/([0-9A-F]{16}): accepted .*uid=54321/);

  // Root's history has it all: the outcome of each recipient and of bob's forward target.
  let last = '';
  const full = await waitFor('every outcome in root\'s history', async () => {
    last = (await log(site, [id!])).stdout;
    return /deferred {2}to=<secret-fwd@elsewhere\.example>/.test(last) && /deferred {2}to=<far@/.test(last) && /bounced {2}to=<tm/.test(last) && /deferred {2}to=<tm/.test(last) ? last : null;
  }).catch((err: Error) => {
    throw new Error(`${err.message}:\n${last}\n${d.logs()}`);
  });
  assert.match(full, new RegExp(`${bob!.home}/saved-mail`));
  assert.match(full, /forwarded to <secret-fwd@elsewhere\.example>/);

  const mine = await log(site, [id!], USER);
  assert.is(mine.code, 0, mine.stderr);
  const json = await log(site, [id!, '--json'], USER);
  assert.is(json.code, 0, json.stderr);
  for (const out of [mine.stdout, json.stdout]) {
    for (const hidden of ['secret-fwd', 'saved-mail', 'piped', 'Maildir', 'carol-outside-home', bob!.home, carol!.home, dave!.home]) {
      assert.not.ok(out.includes(hidden), `the sender sees ${hidden}:\n${out}`);
    }
  }
  // What the sender does see: each recipient they gave, with the verdict and the status code.
  assert.match(mine.stdout, new RegExp(`delivered {2}to=<${bob!.name}@tidemail\\.test> route=local result="2\\.0\\.0 delivered to the local recipient \\(forwarded by the recipient\\)"`));
  assert.match(mine.stdout, new RegExp(`bounced {2}to=<${carol!.name}@tidemail\\.test> route=local result="5\\.7\\.1 local delivery failed`));
  assert.match(mine.stdout, new RegExp(`deferred {2}to=<${dave!.name}@tidemail\\.test> route=local result="4\\.2\\.0 local delivery failed for now; retried later[^"]*" attempts=1 `));
  assert.match(mine.stdout, /deferred {2}to=<far@remote\.example> route=isp .*result="[^"]*(ECONNREFUSED|refused)/i, 'a remote hop\'s error stays');
  const queued = (JSON.parse(json.stdout) as { queued: { recipients: { address: string; lastError: string | null }[] } }[])[0]!.queued.recipients;
  assert.equal(queued.map((r) => r.address).sort(), [`${dave!.name}@tidemail.test`, 'far@remote.example'].sort());
  // The forward target cannot be found by asking for it either.
  const probe = await log(site, ['secret-fwd@elsewhere.example'], USER);
  assert.is(probe.code, 66, probe.stdout);
  const byRcpt = await log(site, [`${bob!.name}@tidemail.test`], USER);
  assert.is(byRcpt.code, 0, byRcpt.stderr);
  assert.match(byRcpt.stdout, new RegExp(id!));
});

test.run();
