// greylist through createCheck with real TOML options, keeping triplets in a real SQLite file
// in a temp state dir. The unit tests step a clock handed to createCheck (so a loaded machine
// cannot stretch a wait past an expiry); the end-to-end test polls the real daemon.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks, type Check, type CheckContext, type Verdict } from '../../src/checks/check.js';
import { clientNetwork, createCheck } from '../../src/checks/greylist.js';
import { Db } from '../../src/queue/db.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

const test = suite('checks/greylist');
const open: Check[] = [];
test.after.each(async () => {
  for (const c of open.splice(0)) await c.close?.();
});
test.after(() => cleanupTmp());

/** The check's clock: starts at the real time, moves only when a test says so. */
let clockMs = Date.now();
const advance = (ms: number) => void (clockMs += ms);

async function make(options: string, stateDir = tmpDir()): Promise<{ check: Check; stateDir: string }> {
  const check = await buildCheck((env) => createCheck(env, () => clockMs), 'greylist', `[checks.greylist]\n${options}`, { stateDir });
  open.push(check);
  return { check, stateDir };
}

const rcpt = (over: Partial<CheckContext> = {}) => context('rcpt', { recipient: 'bob@tidemail.test', ...over });
const text = (v: Verdict) => (v.action === 'tempfail' ? `${v.code} ${v.enhanced} ${v.text}` : v.action);

async function rows(stateDir: string): Promise<{ network: string; sender: string; recipient: string; passed_at: number | null }[]> {
  const file = path.join(stateDir, 'greylist.sqlite');
  if (!fs.existsSync(file)) return []; // opened at the first RCPT that needs it
  const db = await Db.open(file, true);
  try {
    return await db.all('SELECT network, sender, recipient, passed_at FROM triplets ORDER BY recipient');
  } finally {
    await db.close();
  }
}

test('client networks: /24 for IPv4, /64 for IPv6', () => {
  assert.is(clientNetwork('198.51.100.7'), '198.51.100.0/24');
  assert.is(clientNetwork('::ffff:198.51.100.7'), '198.51.100.0/24');
  assert.is(clientNetwork('2001:db8:0:12:a::1'), '2001:db8:0:12::/64');
  assert.is(clientNetwork('2001:db8::1'), '2001:db8:0:0::/64');
});

test('default delay: a new triplet gets 450 4.7.1 with the wait in seconds, and is stored', async () => {
  const { check, stateDir } = await make('');
  assert.not.ok(fs.existsSync(path.join(stateDir, 'greylist.sqlite')), 'building the check (tidemail config check) creates no state');
  assert.is(text(await check.run('rcpt', rcpt())), '450 4.7.1 Greylisted, try again in 300 seconds');
  const r = await rows(stateDir);
  assert.equal(r, [{ network: '198.51.100.0/24', sender: 'alice@example.org', recipient: 'bob@tidemail.test', passed_at: null }]);
  // A retry a moment later is told the remaining wait.
  advance(1100);
  assert.is(text(await check.run('rcpt', rcpt())), '450 4.7.1 Greylisted, try again in 299 seconds');
});

test('a retry after the delay passes, from any address of the same network; another network waits', async () => {
  const { check, stateDir } = await make('delay = "1s"\n');
  assert.is(text(await check.run('rcpt', rcpt())), '450 4.7.1 Greylisted, try again in 1 second');
  assert.is((await check.run('rcpt', rcpt({ sender: 'Alice@Example.ORG', recipient: 'Bob@tidemail.test' }))).action, 'tempfail', 'case-insensitive triplet, still too early');
  advance(999);
  assert.is(text(await check.run('rcpt', rcpt())), '450 4.7.1 Greylisted, try again in 1 second', '1 ms before the delay is over');
  advance(1);
  assert.equal(await check.run('rcpt', rcpt({ clientAddress: '198.51.100.200' })), { action: 'next' });
  assert.equal(await check.run('rcpt', rcpt()), { action: 'next' });
  assert.is((await check.run('rcpt', rcpt({ clientAddress: '198.51.101.7' }))).action, 'tempfail');
  assert.is((await check.run('rcpt', rcpt({ recipient: 'carol@tidemail.test' }))).action, 'tempfail', 'another recipient is another triplet');
  assert.is((await check.run('rcpt', rcpt({ sender: '' }))).action, 'tempfail', 'the null sender too');
  const passed = (await rows(stateDir)).filter((r) => r.passed_at !== null);
  assert.is(passed.length, 1);
});

test('passed triplets survive a restart (same SQLite file)', async () => {
  const first = await make('delay = "500ms"\n');
  await first.check.run('rcpt', rcpt());
  advance(600);
  assert.equal(await first.check.run('rcpt', rcpt()), { action: 'next' });
  await first.check.close!();
  open.splice(open.indexOf(first.check), 1);
  const again = await make('delay = "500ms"\n', first.stateDir);
  assert.equal(await again.check.run('rcpt', rcpt()), { action: 'next' });
});

test('trusted, authenticated, dnswl- and SPF-vouched clients pass at once and leave no triplet', async () => {
  const { check, stateDir } = await make('');
  const vouched: Partial<CheckContext>[] = [{ trusted: true }, { authUser: 'alice' }, { connection: { dnswl: true } }, { transaction: { spf: 'pass' } }];
  for (const over of vouched) {
    assert.equal(await check.run('rcpt', rcpt(over)), { action: 'next' }, JSON.stringify(over));
  }
  assert.is((await rows(stateDir)).length, 0);
  // A failed SPF is no reason to skip; nor is a DKIM pass, which at RCPT can only be another message's.
  assert.is((await check.run('rcpt', rcpt({ transaction: { spf: 'fail' } }))).action, 'tempfail');
  assert.is((await check.run('rcpt', rcpt({ sender: 'dkim@example.org', transaction: { dkim: 'pass' } }))).action, 'tempfail');
});

test('expire: a triplet not retried in time starts over; pass_expire: a passed one unseen that long too', async () => {
  const { check } = await make('delay = "200ms"\nexpire = "600ms"\npass_expire = "600ms"\n');
  await check.run('rcpt', rcpt());
  advance(800);
  assert.is(text(await check.run('rcpt', rcpt())), '450 4.7.1 Greylisted, try again in 1 second', 'expired: greylisted afresh');
  advance(300);
  assert.equal(await check.run('rcpt', rcpt()), { action: 'next' });
  advance(400);
  assert.equal(await check.run('rcpt', rcpt()), { action: 'next' }, 'seen within pass_expire: still passes, and refreshed');
  advance(800);
  assert.is((await check.run('rcpt', rcpt())).action, 'tempfail', 'unseen longer than pass_expire');
});

test('IPv6 clients are greylisted per /64', async () => {
  const { check } = await make('delay = "300ms"\n');
  await check.run('rcpt', rcpt({ clientAddress: '2001:db8:5:6::25' }));
  advance(400);
  assert.equal(await check.run('rcpt', rcpt({ clientAddress: '2001:db8:5:6:ffff::1' })), { action: 'next' });
  assert.is((await check.run('rcpt', rcpt({ clientAddress: '2001:db8:5:7::25' }))).action, 'tempfail');
});

test('a database that cannot be opened is a 451 tempfail, never a pass', async () => {
  const notADir = path.join(tmpDir(), 'file');
  fs.writeFileSync(notADir, '');
  const { check } = await make('', path.join(notADir, 'state'));
  const v = await runChecks([check], 'rcpt', rcpt());
  assert.is(v.action, 'tempfail');
  assert.match(text(v), /^451 4\.3\.0 Temporary failure in check greylist: /);
});

test('bad options fail with file:line and the fix', async () => {
  try {
    await make('delay = "1h"\nexpire = "30m"\n');
    assert.unreachable('accepted expire < delay');
  } catch (err) {
    assert.instance(err, ConfigError);
    assert.match((err as Error).message, /tidemail\.toml:3(?::\d+)?: 'checks\.greylist\.expire' is not longer than delay/);
  }
  try {
    await make('delay = "soon"\n');
    assert.unreachable('accepted delay = "soon"');
  } catch (err) {
    assert.match((err as Error).message, /'checks\.greylist\.delay' is not a duration/);
  }
});

// End to end: the daemon greylists an untrusted client on 127.0.0.1, keeping the triplets in
// greylist.sqlite in its state dir (created by the run user, nobody, when we are root).
const { front, session } = frontHelpers(test);
const LOCAL_USER = '[local]\ndomains = ["tidemail.test"]\n[local.users]\nme = "root"\n';
const MSG = 'From: <x@remote.example>\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nSubject: hi\r\n\r\nhi\r\n';

test('e2e: RCPT gets 450 4.7.1 the first time; the retry after the delay is accepted', async () => {
  const f = await front({
    trusted: ['192.0.2.0/24'],
    extraToml: `[checks]\nrcpt = ["greylist"]\n[checks.greylist]\ndelay = "2s"\n${LOCAL_USER}`,
    smtpToml: 'greet_delay = "0s"',
  });
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
  const first = Date.now();
  assert.is(await c.cmd('RCPT TO:<me@tidemail.test>'), '450 4.7.1 Greylisted, try again in 2 seconds');
  assert.match(await c.cmd('RSET'), /^250 /);
  // The sender retries until it is let in, from another address of the same /24, as big
  // senders' pools do; the delay is measured from the first attempt, so that is after 2 s.
  const again = await session(f.site.port, '127.0.0.1', '127.0.0.2');
  await waitFor('a retry to be accepted', async () => {
    assert.match(await again.cmd('MAIL FROM:<x@remote.example>'), /^250 /);
    const reply = await again.cmd('RCPT TO:<me@tidemail.test>');
    if (/^250 /.test(reply)) return true;
    assert.match(reply, /^450 4\.7\.1 Greylisted, try again in [12] seconds?$/);
    assert.match(await again.cmd('RSET'), /^250 /);
    return false;
  }, 20_000, 200);
  assert.ok(Date.now() - first >= 1990, 'let in before the delay was over');
  assert.match(await again.cmd('DATA'), /^354 /);
  again.write(`${MSG}.\r\n`);
  assert.match(await again.reply(30_000), /^250 /);
  const r = await rows(f.site.stateDir);
  assert.equal(r.map((x) => [x.network, x.sender, x.recipient, x.passed_at !== null]), [['127.0.0.0/24', 'x@remote.example', 'me@tidemail.test', true]]);
  if (isRoot()) {
    const nobody = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    assert.is(fs.statSync(path.join(f.site.stateDir, 'greylist.sqlite')).uid, nobody, 'the database belongs to the run user');
  }
});

test.run();
