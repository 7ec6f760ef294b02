// The clamd check against a real ClamAV clamd (apt) whose database holds only a signature this
// test writes: an MD5 (.hdb) signature of an attachment. clamd decodes the MIME message itself,
// so a hit proves the whole message arrived and was parsed, not just that bytes were matched.

import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks } from '../../src/checks/check.js';
import { createCheck } from '../../src/checks/clamd.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { startClamd, hdbSignature, type Clamd } from '../helpers/clamd.js';
import { freePort } from '../helpers/ports.js';
import { cleanupTmp } from '../helpers/tmp.js';

const test = suite('clamd');
// A fresh "virus" per run: only this test's database knows it.
const ATTACHMENT = Buffer.concat([Buffer.from('tidemail clamd test attachment\n'), randomBytes(64)]);
const SIGNATURE = 'Tidemail.Test.Attachment';
let clamd: Clamd;
const extra: Clamd[] = [];
test.before(async () => {
  clamd = await startClamd({ signatures: { 'tidemail.hdb': hdbSignature(ATTACHMENT, SIGNATURE) } });
  console.log(`clamd accepted connections ${clamd.startMs} ms after spawn`);
});
test.after(async () => {
  for (const c of [clamd, ...extra]) await c?.stop();
  cleanupTmp();
});

/** A message as the session hands it to checks, with `attachment` base64-encoded at the end. */
function message(attachment: Buffer, padding = 0): Buffer {
  const b64 = attachment.toString('base64').replace(/.{76}/g, '$&\r\n');
  return Buffer.from(
    [
      'Received: from mail.example.org (mail.example.org [198.51.100.7])',
      '\tby tidemail.test with ESMTP id 4F2A1B2C3D4E5F60; Wed, 25 Nov 2026 21:30:00 +0000',
      'From: Alice <alice@example.org>',
      'To: Bob <bob@tidemail.test>',
      'Subject: the report',
      'Date: Wed, 25 Nov 2026 21:29:58 +0000',
      'Message-ID: <r1@mail.example.org>',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      'Here is the report.',
      ...Array.from({ length: Math.ceil(padding / 72) }, () => 'y'.repeat(70)),
      '--b1',
      'Content-Type: application/octet-stream',
      'Content-Transfer-Encoding: base64',
      'Content-Disposition: attachment; filename="report.bin"',
      '',
      b64,
      '--b1--',
      '',
    ].join('\r\n'),
  );
}

function dataCtx(msg: Buffer, size: number | undefined = msg.length) {
  return context('data', {
    recipients: ['bob@tidemail.test'],
    queueId: '4F2A1B2C3D4E5F60',
    size,
    body: () => Readable.from((function* () {
      for (let i = 0; i < msg.length; i += 65536) yield msg.subarray(i, i + 65536);
    })()),
  });
}
const build = (address: string, options = '') => buildCheck(createCheck, 'clamd', `[checks.clamd]\naddress = "${address}"\n${options}\n`);

test('an infected attachment is refused with 554 5.7.1 naming the signature', async () => {
  const v = await (await build(clamd.address)).run('data', dataCtx(message(ATTACHMENT)));
  assert.is(v.action, 'reject', JSON.stringify(v));
  assert.ok(v.action === 'reject' && v.code === 554 && v.enhanced === '5.7.1', JSON.stringify(v));
  const name = /^Message contains a virus \((.+)\)$/.exec((v as { text: string }).text)?.[1];
  assert.ok(name?.startsWith(SIGNATURE), (v as { text: string }).text);
});

test('a clean message passes; one changed byte in the attachment is clean too', async () => {
  const check = await build(clamd.address);
  const altered = Buffer.from(ATTACHMENT);
  altered[0] ^= 1;
  assert.equal(await check.run('data', dataCtx(message(altered))), { action: 'next' });
  assert.equal(await check.run('data', dataCtx(message(Buffer.from('just a text file\n')))), { action: 'next' });
});

test('over the unix socket, and a 3 MB message whose attachment comes last', async () => {
  const check = await build(clamd.socket);
  const big = message(ATTACHMENT, 3 * 1024 * 1024);
  assert.ok(big.length > 3 * 1024 * 1024);
  const v = await check.run('data', dataCtx(big));
  assert.is(v.action, 'reject', JSON.stringify(v));
  assert.equal(await check.run('data', dataCtx(message(Buffer.from('clean\n'), 3 * 1024 * 1024))), { action: 'next' });
});

test('bigger than max_size is not scanned, whether SIZE= said so or only the stream shows it', async () => {
  const msg = message(ATTACHMENT, 200_000);
  const check = await build(clamd.address, 'max_size = "100K"');
  assert.equal(await check.run('data', dataCtx(msg)), { action: 'next' });
  assert.equal(await check.run('data', dataCtx(msg, undefined)), { action: 'next' });
  assert.is((await (await build(clamd.address, 'max_size = "1M"')).run('data', dataCtx(msg, undefined))).action, 'reject');
});

test('clamd refusing the stream (StreamMaxLength) is an error: 451, or accept with on_error = "accept"', async () => {
  const small = await startClamd({ signatures: { 'tidemail.hdb': hdbSignature(ATTACHMENT, SIGNATURE) }, streamMaxLength: '64K' });
  extra.push(small);
  const msg = message(ATTACHMENT, 300_000);
  const v = await runChecks([await build(small.address)], 'data', dataCtx(msg));
  assert.ok(v.action === 'tempfail' && v.code === 451 && /clamd/.test(v.text), JSON.stringify(v));
  // clamd's answer, or — when its hang-up reset the connection before the answer could be read —
  // the reset itself: either way a tempfail, never an accept.
  assert.match((v as { text: string }).text, /size limit exceeded|ECONNRESET|EPIPE/);
  assert.equal(await (await build(small.address, 'on_error = "accept"')).run('data', dataCtx(msg)), { action: 'next' });
});

test('clamd down or silent: 451 by default, accepted unscanned with on_error = "accept"', async () => {
  const port = await freePort();
  const v = await runChecks([await build(`127.0.0.1:${port}`)], 'data', dataCtx(message(ATTACHMENT)));
  assert.ok(v.action === 'tempfail' && v.code === 451 && /clamd/.test(v.text), JSON.stringify(v));
  assert.equal(await (await build(`127.0.0.1:${port}`, 'on_error = "accept"')).run('data', dataCtx(message(ATTACHMENT))), { action: 'next' });
  const silent = net.createServer((s) => s.resume());
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const sp = (silent.address() as net.AddressInfo).port;
  const t = await (await build(`127.0.0.1:${sp}`, 'timeout = "300ms"')).run('data', dataCtx(message(ATTACHMENT))).then(() => null, (e: Error) => e);
  assert.match(String(t?.message), /no answer within 300 ms/);
  silent.close();
});

test('bad options are config errors with file:line', async () => {
  const bad = async (toml: string, re: RegExp) => {
    const err = await Promise.resolve().then(() => buildCheck(createCheck, 'clamd', toml)).then(() => null, (e: Error) => e);
    assert.instance(err, ConfigError, toml);
    assert.match(err!.message, re);
  };
  await bad('[checks.clamd]\non_error = "ignore"\n', /tidemail\.toml:2(:\d+)?: 'checks\.clamd\.on_error' is "ignore"/);
  await bad('[checks.clamd]\naddress = "clamd"\n', /:2(:\d+)?: .*neither host:port nor a socket path/);
  await bad('[checks.clamd]\nmaxsize = "1M"\n', /did you mean 'max_size'/);
});

test('end to end: the daemon refuses the infected message with 554 5.7.1 and relays the clean one', async () => {
  const sh = await startSmarthost();
  const site = await makeSite(`[checks]\ndata = ["clamd"]\n[checks.clamd]\naddress = "${clamd.address}"\n`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const refused = await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], message(ATTACHMENT));
    assert.match(refused, new RegExp(`^554 5\\.7\\.1 Message contains a virus \\(${SIGNATURE.replace(/\./g, '\\.')}[^)]*\\)`));
    const clean = message(Buffer.from('the quarterly numbers\n'));
    assert.match(await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], clean), /^250/);
    const [got] = await sh.waitForMessages(1);
    assert.ok(got!.raw.toString().endsWith(clean.toString()), 'the clean message was not relayed intact');
    assert.is(sh.messages.length, 1);
    assert.match(d.logs(), /clamd found a virus check=clamd virus=Tidemail\.Test\.Attachment/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
