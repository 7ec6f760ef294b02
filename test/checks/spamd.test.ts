// The spamd check against a real SpamAssassin spamd (apt) on loopback: GTUBE is refused, a plain
// message passes with X-Spam-* headers, sizes and failures behave as configured.

import net from 'node:net';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks, type Check, type HeaderField } from '../../src/checks/check.js';
import { createCheck } from '../../src/checks/spamd.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSpamd, type Spamd } from '../helpers/spamd.js';
import { cleanupTmp } from '../helpers/tmp.js';

const test = suite('spamd');
let spamd: Spamd;
test.before(async () => {
  spamd = await startSpamd();
  console.log(`spamd accepted connections ${spamd.startMs} ms after spawn`);
});
test.after(async () => {
  await spamd?.stop();
  cleanupTmp();
});

const GTUBE = 'XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X';

/** A message as the session hands it to checks: our Received: on top, CRLF line ends. */
function message(body: string, subject = 'Lunch on Friday'): Buffer {
  return Buffer.from(
    [
      'Received: from mail.example.org (mail.example.org [198.51.100.7])',
      '\tby tidemail.test with ESMTP id 4F2A1B2C3D4E5F60; Wed, 25 Nov 2026 21:30:00 +0000',
      'From: Alice Example <alice@example.org>',
      'To: Bob <bob@tidemail.test>',
      `Subject: ${subject}`,
      'Date: Wed, 25 Nov 2026 21:29:58 +0000',
      'Message-ID: <20261125212958.1234@mail.example.org>',
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=utf-8',
      '',
      body,
    ].join('\r\n'),
  );
}
const PLAIN = 'Hi Bob,\r\n\r\nshall we meet for lunch on Friday at noon? The usual place.\r\n\r\nAlice\r\n';

/** The data-phase context; body() is a fresh stream each call, in 16 KiB pieces as from a file. */
function dataCtx(msg: Buffer, size: number | undefined = msg.length) {
  return context('data', {
    recipients: ['bob@tidemail.test'],
    queueId: '4F2A1B2C3D4E5F60',
    size,
    body: () => Readable.from((function* () {
      for (let i = 0; i < msg.length; i += 16384) yield msg.subarray(i, i + 16384);
    })()),
  });
}

const build = (options: string) => buildCheck(createCheck, 'spamd', `[checks.spamd]\naddress = "${spamd.address}"\n${options}\n`);
const header = (h: HeaderField[] | undefined, name: string) => h?.find((f) => f.name === name)?.value;

test('GTUBE is refused with 550 5.7.1 and its score', async () => {
  const check = await build('reject_score = 10');
  const v = await check.run('data', dataCtx(message(`Hello,\r\n\r\n${GTUBE}\r\n`)));
  assert.is(v.action, 'reject', JSON.stringify(v));
  assert.ok(v.action === 'reject' && v.code === 550 && v.enhanced === '5.7.1', JSON.stringify(v));
  const score = Number(/score (-?[\d.]+)/.exec((v as { text: string }).text)?.[1]);
  assert.ok(score >= 1000, `GTUBE scores 1000+, got ${score}`);
});

test('a plain message passes with X-Spam-Status and X-Spam-Score', async () => {
  const check = await build('');
  const v = await check.run('data', dataCtx(message(PLAIN)));
  assert.is(v.action, 'next', JSON.stringify(v));
  const h = v.action === 'next' ? v.addHeaders : undefined;
  const status = header(h, 'X-Spam-Status');
  const score = header(h, 'X-Spam-Score');
  assert.ok(status && score, JSON.stringify(v));
  const m = /^No, score=(-?\d+\.\d) required=(\d+\.\d) tests=(\S+)$/.exec(status);
  assert.ok(m, status);
  assert.is(m[1], score);
  assert.ok(Number(score) < 5, status);
  // The tests are SpamAssassin's rule names, as spamd's own log reports them.
  for (const rule of m[3]!.split(',')) assert.match(rule, /^[A-Z0-9_]+$/);
});

test('the score threshold is ours: a plain message is refused when reject_score is below its score', async () => {
  const pass = await (await build('')).run('data', dataCtx(message(PLAIN)));
  const score = Number(header(pass.action === 'next' ? pass.addHeaders : undefined, 'X-Spam-Score'));
  const check = await build(`reject_score = ${score - 0.5}`);
  const v = await check.run('data', dataCtx(message(PLAIN)));
  assert.is(v.action, 'reject', JSON.stringify(v));
  assert.match((v as { text: string }).text, new RegExp(`score ${score}`));
});

test('over the unix socket too', async () => {
  const check = await buildCheck(createCheck, 'spamd', `[checks.spamd]\naddress = "${spamd.socket}"\n`);
  assert.is((await check.run('data', dataCtx(message(`${GTUBE}\r\n`)))).action, 'reject');
  assert.is((await check.run('data', dataCtx(message(PLAIN)))).action, 'next');
});

test('add_headers = false passes without headers', async () => {
  const check = await build('add_headers = false');
  assert.equal(await check.run('data', dataCtx(message(PLAIN))), { action: 'next' });
});

test('a 400 KB message is streamed in full with an exact Content-length', async () => {
  // SpamAssassin reads only the first 50 kB of a body for its rules (body_part_scan_size), so
  // GTUBE goes up front; spamd refuses a Content-length that differs from the bytes it got.
  const filler = ('Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n').repeat(5000);
  const msg = message(`${GTUBE}\r\n${filler}`);
  assert.ok(msg.length > 400_000 && msg.length < 500 * 1024);
  const v = await (await build('')).run('data', dataCtx(msg));
  assert.is(v.action, 'reject', JSON.stringify(v));
  // spamd logs the bytes it read (its log line may trail its reply a little).
  const read = new RegExp(`identified spam \\([\\d.]+/5\\.0\\) for \\S+ in [\\d.]+ seconds, ${msg.length} bytes`);
  await waitFor('spamd log line', () => read.test(spamd.log()), 5000).catch(() => assert.match(spamd.log(), read));
});

test('bigger than max_size is not scanned, whether SIZE= said so or only the stream shows it', async () => {
  const msg = message(`${'x'.repeat(2000)}\r\n${GTUBE}\r\n`);
  const check = await build('max_size = "1K"');
  assert.equal(await check.run('data', dataCtx(msg)), { action: 'next' });
  assert.equal(await check.run('data', dataCtx(msg, undefined)), { action: 'next' });
  // Under the limit the same message is refused.
  const check2 = await build('max_size = "10K"');
  assert.is((await check2.run('data', dataCtx(msg, undefined))).action, 'reject');
});

test('spamd down: 451 by default, accepted unscanned with tempfail_on_error = false', async () => {
  const port = await freePort();
  const down = (extra: string) => buildCheck(createCheck, 'spamd', `[checks.spamd]\naddress = "127.0.0.1:${port}"\n${extra}\n`);
  const strict: Check = await down('');
  const v = await runChecks([strict], 'data', dataCtx(message(PLAIN)));
  assert.ok(v.action === 'tempfail' && v.code === 451 && /spamd/.test(v.text), JSON.stringify(v));
  const lax = await down('tempfail_on_error = false');
  assert.equal(await lax.run('data', dataCtx(message(PLAIN))), { action: 'next' });
});

test('a server that is not spamd is an error, not a pass', async () => {
  const server = net.createServer((s) => s.end('HTTP/1.1 400 Bad Request\r\n\r\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const check = await buildCheck(createCheck, 'spamd', `[checks.spamd]\naddress = "127.0.0.1:${port}"\n`);
  const v = await runChecks([check], 'data', dataCtx(message(PLAIN)));
  assert.is(v.action, 'tempfail', JSON.stringify(v));
  server.close();
});

test('bad options are config errors with file:line', async () => {
  const bad = async (toml: string, re: RegExp) => {
    const err = await Promise.resolve().then(() => buildCheck(createCheck, 'spamd', toml)).then(() => null, (e: Error) => e);
    assert.instance(err, ConfigError, toml);
    assert.match(err!.message, re);
  };
  await bad('[checks.spamd]\nreject_score = "ten"\n', /tidemail\.toml:2(:\d+)?: 'checks\.spamd\.reject_score' must be a number/);
  await bad('[checks.spamd]\naddress = "localhost"\n', /:2(:\d+)?: .*neither host:port nor a socket path/);
  await bad('[checks.spamd]\nmax_size = "big"\n', /:2(:\d+)?: .*not a size/);
  await bad('[checks.spamd]\nrejectscore = 5\n', /:2(:\d+)?: .*not a known setting[\s\S]*did you mean 'reject_score'/);
});

test('end to end: the daemon refuses GTUBE at end of DATA and relays a plain message with X-Spam-Status', async () => {
  const sh = await startSmarthost();
  const site = await makeSite(`[checks]\ndata = ["spamd"]\n[checks.spamd]\naddress = "${spamd.address}"\nreject_score = 10\n`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const refused = await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], message(`Hello,\r\n\r\n${GTUBE}\r\n`));
    assert.match(refused, /^550 5\.7\.1 Message rejected as spam \(score \d+/);
    assert.match(await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], message(PLAIN)), /^250/);
    const [got] = await sh.waitForMessages(1);
    const raw = got!.raw.toString();
    // Our headers on top, above the daemon's own Received:.
    assert.match(raw, /^X-Spam-Status: No, score=-?\d+\.\d required=5\.0 tests=\S+\r\nX-Spam-Score: -?\d+\.\d\r\nReceived: /);
    assert.ok(raw.includes(PLAIN));
    assert.is(sh.messages.length, 1, 'the refused message was relayed');
    assert.match(d.logs(), /refused by check check=spamd phase=data/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
