// [queue] queue_minfree: with too little free space on state_dir's filesystem, new mail is
// refused before it is sent — 452 4.3.1 at MAIL FROM (SIZE= counted 1.5 times), sendmail exit
// 75 with nothing written — and taken again once space is back. The daemon runs on a small
// tmpfs, so it needs root (as CI runs).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { smallDisk, unmountDisks } from '../helpers/disk.js';
import { waitFor } from '../helpers/ports.js';
import { RawSmtp, sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

const MiB = 1024 * 1024;
const MINFREE = 4 * MiB;

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

const freeOn = (state: string) => {
  const st = fs.statfsSync(path.dirname(state));
  return Number(st.bavail) * Number(st.bsize);
};

/** Leaves about `bytes` free on the disk (one more filler file beside the state dir). */
function leaveFree(state: string, bytes: number): void {
  const want = freeOn(state) - bytes;
  const dir = path.dirname(state);
  if (want > 0) fs.writeFileSync(path.join(dir, `filler${fs.readdirSync(dir).filter((n) => n.startsWith('filler')).length}`), Buffer.alloc(want, 0x78));
}

const removeFillers = (state: string) => {
  const dir = path.dirname(state);
  for (const n of fs.readdirSync(dir)) if (n.startsWith('filler')) fs.rmSync(path.join(dir, n));
};

/** The reply to MAIL FROM on a fresh session (then QUIT). */
async function mailReply(port: number, params = ''): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.hello();
    return await c.cmd(`MAIL FROM:<a@tidemail.test>${params}`);
  } finally {
    c.close();
  }
}

const count = (d: RunningDaemon, re: RegExp) => d.logs().split('\n').filter((l) => re.test(l)).length;
const files = (dir: string) => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

async function site16M() {
  const state = smallDisk(16 * 1024);
  const site = await makeSite('[queue]\nqueue_minfree = "4M"', { stateDir: state, smtpToml: 'max_message_size = "10M"' });
  return { state, site, d: await startDaemon(site) };
}

if (!isRoot()) {
  test.skip('queue_minfree (needs root for a tmpfs mount)', () => undefined);
} else {
  test('MAIL with a SIZE= that does not fit beside the reserve: 452 4.3.1 before DATA; one that fits is taken', async () => {
    const { state, site, d } = await site16M();
    try {
      // Over max_message_size is still the permanent 552.
      assert.match(await mailReply(site.port, ` SIZE=${10 * MiB + 1}`), /^552 5\.3\.4 /);
      const free = freeOn(state);
      const tooBig = Math.ceil((free - MINFREE) / 1.5) + 512 * 1024;
      assert.ok(tooBig < 10 * MiB, `SIZE=${tooBig} must be under max_message_size for this test`);
      assert.match(await mailReply(site.port, ` SIZE=${tooBig}`), /^452 4\.3\.1 Insufficient system storage for a message of \d+ bytes/);
      assert.ok(count(d, /sender refused: too little free space for the announced SIZE/) >= 1, d.logs());
      // Enough room: the same session goes on to DATA and the message is queued.
      const c = await RawSmtp.connect(site.port);
      await c.hello();
      assert.match(await c.cmd('MAIL FROM:<a@tidemail.test> SIZE=1000'), /^250 /);
      assert.match(await c.cmd('RCPT TO:<z@remote.example>'), /^250 /);
      assert.match(await c.cmd('DATA'), /^354 /);
      assert.match(await c.cmd('Subject: fits\r\n\r\nx\r\n.'), /^250 /);
      c.close();
      // Not below the reserve itself: no "refusing new mail" warning.
      assert.is(count(d, /refusing new mail/), 0, d.logs());
      // A reload applies a new queue_minfree: without the reserve the same SIZE= fits.
      fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('queue_minfree = "4M"', 'queue_minfree = "0"'));
      d.proc.kill('SIGHUP');
      await d.waitForLog(/configuration reloaded/);
      assert.match(await mailReply(site.port, ` SIZE=${tooBig}`), /^250 /);
    } finally {
      await d.stop();
    }
  });

  test('below queue_minfree: MAIL gets 452, sendmail still uses the lower half, then exits 75 writing nothing, check says so; freed space takes mail again', async () => {
    const { state, site, d } = await site16M();
    try {
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: before\r\n\r\nx\r\n'), /^250 /);
      leaveFree(state, 3 * MiB);
      // The daemon's figure is at most a second old: poll.
      const refused = await waitFor('MAIL to be refused', async () => {
        const r = await mailReply(site.port);
        return r.startsWith('250') ? null : r;
      }, 10_000, 100);
      assert.match(refused, /^452 4\.3\.1 Insufficient system storage: the mail queue is nearly full/);
      // Trusted clients (loopback is in trusted_networks) too, and a small SIZE does not help.
      for (let i = 0; i < 5; i++) assert.match(await mailReply(site.port, ' SIZE=100'), /^452 4\.3\.1 .*nearly full/);
      assert.is(count(d, /refusing new mail: too little free space/), 1, `one warning, not one per MAIL:\n${d.logs()}`);
      assert.match(d.logs(), /refusing new mail.*free="[\d.]+ MiB" queue_minfree="4\.0 MiB"/);

      // sendmail (cron, alerts) may use the lower half of the reserve, which the network may not.
      const cron = await runCli(['-i', '-C', site.configPath, 'cron@remote.example'], { argv0: 'sendmail', input: 'Subject: cron\n\nreport\n' });
      assert.is(cron.code, 0, cron.stderr);
      // Below half the reserve: EX_TEMPFAIL and a clear message, and no file in the maildrop, not even a .tmp-.
      leaveFree(state, 1 * MiB);
      const drop = path.join(state, 'maildrop');
      const before = files(drop);
      const sm = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: 'Subject: cron\n\nreport\n' });
      assert.is(sm.code, 75, sm.stderr);
      assert.match(sm.stderr, /cannot queue the message: .* free, less than the 2\.0 MiB of \[queue\] queue_minfree that local mail may not use .*nothing was sent, try again later/);
      assert.equal(files(drop), before);

      const check = await runCli(['check', '--config', site.configPath], { timeoutMs: 60_000 });
      assert.match(check.stdout + check.stderr, /refusing new mail: [\d.]+ MiB free on .*, queue_minfree 4\.0 MiB/);

      // The admin frees space: mail is taken again, and the log says so once.
      removeFillers(state);
      await waitFor('MAIL to be taken again', async () => (await mailReply(site.port)).startsWith('250'), 10_000, 100);
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: after\r\n\r\nx\r\n'), /^250 /);
      assert.is(count(d, /accepting new mail again/), 1, d.logs());
      const ok = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: 'Subject: cron\n\nreport\n' });
      assert.is(ok.code, 0, ok.stderr);
      // Queued: the two SMTP messages, cron's and the second sendmail's; the refused one never was.
      const n = (out: string, rcpt: string) => out.split(rcpt).length - 1;
      await waitFor('the four messages in mailq', async () => {
        const out = (await runCli(['mailq', '--config', site.configPath])).stdout;
        return n(out, 'z@remote.example') === 2 && n(out, 'q@remote.example') === 1 && n(out, 'cron@remote.example') === 1;
      }, 10_000, 200);
    } finally {
      await d.stop();
    }
  });

  test('queue_minfree unset (auto) on a 16 MiB filesystem: a tenth of it is kept, not 2 x max_message_size, so mail still flows', async () => {
    const state = smallDisk(16 * 1024);
    const site = await makeSite('', { stateDir: state, smtpToml: 'max_message_size = "10M"' });
    const d = await startDaemon(site);
    try {
      // 2 x 10M = 20 MiB would refuse everything on this disk; a tenth of 16 MiB is 1.6 MiB.
      assert.match(await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: small disk\r\n\r\nx\r\n'), /^250 /);
      const sm = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: 'Subject: cron\n\nreport\n' });
      assert.is(sm.code, 0, sm.stderr);
      const check = await runCli(['check', '--config', site.configPath], { timeoutMs: 60_000 });
      assert.not.match(check.stdout + check.stderr, /refusing new mail/);
      // Below that tenth, the reserve holds: MAIL gets 452 (the figure is at most a second old: poll).
      leaveFree(state, 1 * MiB);
      const refused = await waitFor('MAIL to be refused', async () => {
        const r = await mailReply(site.port);
        return r.startsWith('250') ? null : r;
      }, 10_000, 100);
      assert.match(refused, /^452 4\.3\.1 /);
      assert.match(d.logs(), /refusing new mail.*queue_minfree="1\.6 MiB"/);
    } finally {
      await d.stop();
    }
  });

  test('sendmail: a message larger than the room above the reserve is refused (75) and its partial file removed', async () => {
    const { state, site, d } = await site16M();
    await d.stop();
    leaveFree(state, MINFREE / 2 + 1 * MiB); // 1 MiB above what local mail may not use
    const big = `Subject: big\n\n${'z'.repeat(999)}\n`.repeat(2 * 1024);
    const sm = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: big });
    assert.is(sm.code, 75, sm.stderr);
    assert.match(sm.stderr, /free above the part of \[queue\] queue_minfree local mail may not use, and the message is larger; nothing was sent/);
    assert.equal(files(path.join(state, 'maildrop')), []);
    assert.ok(freeOn(state) >= MINFREE / 2, 'the reserve\'s lower half is still free');
  });
}

test.run();
