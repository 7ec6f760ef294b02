// Repeated log lines (src/log/repeats.ts): the first of a kind at once, then at most one line a
// minute with "(N more like this since T)". The limiter itself on a stepped clock, then the two
// floods it is for, in the real daemon: a client retrying a big SIZE= refused for space (needs
// root for a small tmpfs), and a local user dropping files the pickup sets aside.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RepeatLimiter } from '../../src/log/repeats.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { fillDisk, freeDisk, smallDisk, unmountDisks } from '../helpers/disk.js';
import { manualTimers } from '../helpers/manual-timers.js';
import { waitFor } from '../helpers/ports.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

const MIN = 60_000;
const MiB = 1024 * 1024;
const T0 = Date.parse('2026-12-04T04:00:00.000Z');

function limiter() {
  const clock = manualTimers(T0);
  const lines: string[] = [];
  const r = new RepeatLimiter(clock, MIN, (level, msg, fields) => lines.push(`${level} ${msg}${fields ? ` ${JSON.stringify(fields)}` : ''}`));
  return { clock, lines, r };
}

test('the first line of a kind goes out at once; the rest of the minute comes as one line with the count and the latest fields', async () => {
  const { clock, lines, r } = limiter();
  r.log('size', 'info', 'refused', { n: 1 });
  assert.equal(lines, ['info refused {"n":1}']);
  for (let n = 2; n <= 50; n++) {
    await clock.advance(1000);
    r.log('size', 'info', 'refused', { n });
  }
  // Another kind is not held back by this one.
  r.log('bad', 'warn', 'set aside', { f: 'x' });
  assert.is(lines.length, 2);
  assert.is(r.held('size'), 49);
  await clock.advance(10_999);
  assert.is(lines.length, 2, 'nothing before the minute is over');
  await clock.advance(1);
  assert.equal(lines.slice(2), ['info refused (49 more like this since 2026-12-04T04:00:00.000Z) {"n":50}']);
  // Still coming: one line a minute, counted from the last line written.
  await clock.advance(1000);
  r.log('size', 'info', 'refused', { n: 51 });
  r.log('size', 'info', 'refused', { n: 52 });
  assert.is(lines.length, 3);
  await clock.advance(MIN);
  assert.equal(lines.slice(3), ['info refused (2 more like this since 2026-12-04T04:01:00.000Z) {"n":52}']);
  // Quiet for a minute: the next one is the first again, at once.
  await clock.advance(2 * MIN);
  r.log('size', 'info', 'refused', { n: 53 });
  assert.equal(lines.slice(4), ['info refused {"n":53}']);
  assert.is(clock.pending, 0, 'no timer while nothing is held back');
});

test('flush writes what is held back now (the daemon\'s stop); a clock stepped back lets the line out', async () => {
  const { clock, lines, r } = limiter();
  r.log('k', 'warn', 'x', { i: 1 });
  r.log('k', 'warn', 'x', { i: 2 });
  r.log('k', 'warn', 'x', { i: 3 });
  r.flush();
  assert.equal(lines, ['warn x {"i":1}', 'warn x (2 more like this since 2026-12-04T04:00:00.000Z) {"i":3}']);
  r.flush();
  assert.is(lines.length, 2, 'nothing twice');
  // A clock stepped back an hour (NTP on a router without RTC): not "within the minute".
  let t = T0;
  const stepped = new RepeatLimiter({ ...clock, now: () => t }, MIN, (_l, msg) => lines.push(msg));
  stepped.log('k', 'warn', 'first');
  t = T0 - 3_600_000;
  stepped.log('k', 'warn', 'after the step');
  assert.equal(lines.slice(-2), ['first', 'after the step']);
});

/** The reply to MAIL FROM on a fresh session (then QUIT). */
async function mailReply(port: number, params: string): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.hello();
    return await c.cmd(`MAIL FROM:<a@tidemail.test>${params}`);
  } finally {
    c.close();
  }
}

const count = (logs: string, re: RegExp) => logs.split('\n').filter((l) => re.test(l)).length;

test('a local user dropping 30 bad files into the maildrop: one "refused" line at once, the other 29 counted in one more; an accepted message still logs its own line', async () => {
  const site = await makeSite();
  const d = await startDaemon(site);
  const drop = path.join(site.stateDir, 'maildrop');
  try {
    for (let i = 0; i < 30; i++) fs.writeFileSync(path.join(drop, `0000000000000000000000${String(i).padStart(2, '0')}`), 'no envelope\r\n');
    const sm = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: 'Subject: amid the flood\n\nx\n' });
    assert.is(sm.code, 0, sm.stderr);
    await waitFor('all 30 set aside', () => fs.readdirSync(drop).filter((n) => n.startsWith('.bad-')).length === 30, 15_000);
    await d.waitForLog(/accepted .*uid=/);
    assert.is(count(d.logs(), /maildrop: refused /), 1, d.logs());
    assert.match(d.logs(), /maildrop: refused file=\S+0000000000000000000000\d\d reason="malformed/);
  } finally {
    await d.stop();
  }
  assert.is(count(d.logs(), /maildrop: refused /), 2, d.logs());
  assert.match(d.logs(), /warn  maildrop: refused \(29 more like this since \S+Z\) file=\S+ reason="malformed .*action="set aside as \.bad-/);
});

if (!isRoot()) {
  test.skip('a client retrying a big SIZE= (needs root for a tmpfs mount)', () => undefined);
} else {
  test('a client retrying a big SIZE= refused for space: 20 refusals, one info line, the rest counted when the daemon stops', async () => {
    const state = smallDisk(16 * 1024);
    const site = await makeSite('[queue]\nqueue_minfree = "4M"', { stateDir: state, smtpToml: 'max_message_size = "10M"' });
    const d = await startDaemon(site);
    try {
      // As a client retrying in a loop does: a new session each time.
      for (let i = 0; i < 20; i++) assert.match(await mailReply(site.port, ` SIZE=${9 * MiB}`), /^452 4\.3\.1 /);
      // A MAIL that fits is still taken.
      assert.match(await mailReply(site.port, ' SIZE=1000'), /^250 /);
      assert.is(count(d.logs(), /sender refused: too little free space for the announced SIZE/), 1, d.logs());
    } finally {
      await d.stop();
    }
    assert.match(d.logs(), /info  sender refused: too little free space for the announced SIZE \(19 more like this since \S+Z\) client=127\.0\.0\.1 size=9437184/);
    assert.is(count(d.logs(), /sender refused: too little free space/), 2, d.logs());
  });

  test('a full disk (queue_minfree = "0") fails every maildrop file at every scan: one "pickup failed" line, the rest counted; the files stay', async () => {
    const state = smallDisk(16 * 1024);
    const site = await makeSite('[queue]\nqueue_minfree = "0"', { stateDir: state });
    const d = await startDaemon(site);
    const drop = path.join(state, 'maildrop');
    try {
      // Written under .tmp- names (a sendmail still writing: the pickup leaves them), then given sendmail's names once the disk is full.
      for (let i = 0; i < 5; i++) {
        const body = Buffer.from(`Subject: ${i}\r\n\r\n${'x'.repeat(200_000)}\r\n`);
        const json = Buffer.from(JSON.stringify({ v: 1, sender: 'root@tidemail.test', recipients: ['z@remote.example'], via: 'sendmail', uid: 0, created: Date.now() }) + '\n');
        fs.writeFileSync(path.join(drop, `.tmp-part${i}`), Buffer.concat([body, json, Buffer.from(String(json.length).padStart(10, '0') + '\n')]));
      }
      fillDisk(state);
      for (let i = 0; i < 5; i++) fs.renameSync(path.join(drop, `.tmp-part${i}`), path.join(drop, `0000000000000000000000f${i}`));
      await d.waitForLog(/maildrop: pickup failed, will retry/);
      const flush = await runCli(['runq', '--config', site.configPath]); // one more scan, all five failing again
      assert.is(flush.code, 0, flush.stderr + flush.stdout);
    } finally {
      await d.stop();
      freeDisk(state);
    }
    assert.is(count(d.logs(), /maildrop: pickup failed/), 2, d.logs());
    const more = /maildrop: pickup failed, will retry \((\d+) more like this since /.exec(d.logs());
    assert.ok(more && Number(more[1]) >= 9, d.logs());
    assert.is(fs.readdirSync(drop).filter((n) => n.startsWith('0000')).length, 5, 'nothing lost');
  });
}

test.run();
