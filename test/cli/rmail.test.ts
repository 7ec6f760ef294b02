// rmail: mail handed over by UUCP (uux … rmail RCPT). The leading "From … remote from HOST"
// lines become the envelope sender as a bang path, like 4.3BSD/sendmail rmail builds its -f:
// every "remote from" host in order, then the user of the last From line; we qualify the
// result with our hostname. Driven as the real program under its rmail name.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import os from 'node:os';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type ReceivedMessage, type Smarthost } from '../helpers/smarthost.js';
import { cleanupTmp } from '../helpers/tmp.js';

let ctx: { sh: Smarthost; site: TestSite; d: RunningDaemon } | null = null;

test.before(async () => {
  const sh = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  ctx = { sh, site, d: await startDaemon(site) };
});
test.after(async () => {
  await ctx?.d.stop();
  await ctx?.sh.close();
  cleanupTmp();
});

let seq = 0;
const uniq = (tag: string) => `${tag}-${process.pid}-${++seq}@remote.example`;

const rmail = (args: string[], input: string) => runCli(['--config', ctx!.site.configPath, ...args], { argv0: 'rmail', input });

const delivered = (rcpt: string): Promise<ReceivedMessage> =>
  waitFor(`a message for ${rcpt}`, () => ctx!.sh.messages.find((m) => m.to.includes(rcpt)));

test('two UUCP From lines: sender is every relay host then the last user; recipients are the arguments', async () => {
  const a = uniq('rm');
  const b = uniq('rm');
  const input =
    'From alice Wed Nov 25 10:00:00 2026 remote from uuhost\n' +
    '>From bob Wed Nov 25 09:59:00 2026 remote from hop2\n' +
    'Subject: over uucp\n' +
    'From: bob@hop2.example\n' +
    '\n' +
    'first line\n' +
    '.\n' +
    'after a lone dot\n';
  const r = await rmail([a, b], input);
  assert.is(r.code, 0, r.stderr);
  const m = await delivered(a);
  assert.is(m.from, 'uuhost!hop2!bob@tidemail.test');
  assert.equal([...m.to].sort(), [a, b].sort());
  const text = m.raw.toString();
  assert.not.match(text, /remote from/, 'the UUCP From lines leaked into the message');
  assert.match(text, /\r\nSubject: over uucp\r\nFrom: bob@hop2\.example\r\n/);
  // rmail never treats a dot line as the end of the message.
  assert.ok(text.endsWith('\r\n\r\nfirst line\r\n.\r\nafter a lone dot\r\n'), JSON.stringify(text.slice(-50)));
});

test('one From line with "remote from": host!user', async () => {
  const rcpt = uniq('one');
  const r = await rmail([rcpt], 'From alice Wed Nov 25 10:00:00 2026 remote from uuhost\nSubject: single\n\nx\n');
  assert.is(r.code, 0, r.stderr);
  assert.is((await delivered(rcpt)).from, 'uuhost!alice@tidemail.test');
});

test('a From line without "remote from" gives the user as is; a full address is not re-qualified', async () => {
  const r1 = uniq('local');
  assert.is((await rmail([r1], 'From carol Wed Nov 25 10:00:00 2026\nSubject: a\n\nx\n')).code, 0);
  assert.is((await delivered(r1)).from, 'carol@tidemail.test');
  const r2 = uniq('full');
  assert.is((await rmail([r2], 'From dave@elsewhere.example Wed Nov 25 10:00:00 2026\nSubject: b\n\nx\n')).code, 0);
  assert.is((await delivered(r2)).from, 'dave@elsewhere.example');
});

test('input without a From line: the calling user is the sender and the message is kept whole', async () => {
  const rcpt = uniq('nofrom');
  const r = await rmail([rcpt], 'Subject: plain\n\nbody\n');
  assert.is(r.code, 0, r.stderr);
  const m = await delivered(rcpt);
  assert.is(m.from, `${os.userInfo().username}@tidemail.test`);
  assert.match(m.raw.toString(), /\r\nSubject: plain\r\n[\s\S]*\r\n\r\nbody\r\n$/);
});

test('CRLF UUCP input works the same', async () => {
  const rcpt = uniq('crlf');
  const r = await rmail([rcpt], 'From alice Wed Nov 25 10:00:00 2026 remote from uuhost\r\nSubject: crlf\r\n\r\nx\r\n');
  assert.is(r.code, 0, r.stderr);
  const m = await delivered(rcpt);
  assert.is(m.from, 'uuhost!alice@tidemail.test');
  assert.not.match(m.raw.toString(), /remote from/);
});

test('rmail without recipients → EX_USAGE (64)', async () => {
  const r = await rmail([], 'From alice Wed Nov 25 10:00:00 2026 remote from uuhost\n\nx\n');
  assert.is(r.code, 64, r.stderr);
  assert.match(r.stderr, /usage: rmail/);
});

test('rmail with a malformed recipient → EX_DATAERR (65)', async () => {
  const r = await rmail(['broken@'], 'From alice Wed Nov 25 10:00:00 2026 remote from uuhost\n\nx\n');
  assert.is(r.code, 65, r.stderr);
});

test.run();
