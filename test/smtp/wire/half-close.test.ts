// A pipelining client that half-closes (shutdown(SHUT_WR), here socket.end()) right after its
// last command still gets every reply, and what it sent completely is processed (RFC 5321 §3.8;
// netcat -N, scripts and embedded clients do this). A half-close inside DATA stores nothing.
// Data sent before the 354 is refused as unsynchronised pipelining (server.ts), half-closed or
// not: the client that pipelines the whole transaction gets that 554. Against a running daemon.

import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../../helpers/daemon.js';
import { cleanupTmp } from '../../helpers/tmp.js';

let d: RunningDaemon;
test.before(async () => {
  d = await startDaemon(await makeSite());
});
test.after(async () => {
  await d.stop();
  cleanupTmp();
});

/**
 * Connects and plays `steps`: each waits until the replies so far match `after`, then writes
 * `send`; the last one is written with our FIN (end()). Returns everything read until EOF.
 */
function halfClosed(steps: { after: RegExp; send: string }[], timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ port: d.site.port, host: '127.0.0.1', allowHalfOpen: true });
    let got = '';
    let next = 0;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no EOF within ${timeoutMs} ms; got ${JSON.stringify(got)}`));
    }, timeoutMs);
    s.setEncoding('latin1');
    s.on('data', (t: string) => {
      got += t;
      while (next < steps.length && steps[next]!.after.test(got)) {
        const { send } = steps[next++]!;
        if (next === steps.length) s.end(send);
        else s.write(send);
      }
    });
    s.on('error', reject);
    s.on('end', () => {
      clearTimeout(timer);
      s.destroy();
      resolve(got);
    });
  });
}

/** How many queued messages have `tag` in their sender (mailq lists each message's sender once). */
async function queuedWith(tag: string): Promise<number> {
  const r = await runCli(['mailq', '--config', d.site.configPath]);
  assert.is(r.code, 0, r.stderr);
  return r.stdout.split(`${tag}@`).length - 1;
}

const GREETING = /^220 .*\r\n/;
const GOT_354 = /\r\n354 [^\r]*\r\n/;
const envelope = (tag: string) => `EHLO client.test\r\nMAIL FROM:<${tag}@client.test>\r\nRCPT TO:<someone@elsewhere.example>\r\nDATA\r\n`;
const body = (tag: string) => `Subject: ${tag}\r\n\r\nhello\r\n.\r\n`;
const REPLIES = /\r\n250 2\.1\.0 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n354 [^\r]*\r\n250 2\.0\.0 [^\r]*\r\n/;

test('pipelined EHLO/MAIL/RCPT/DATA, then body+QUIT and a half-close: the 250 after the data, 221, queued once', async () => {
  const tag = `halfclose${Date.now()}`;
  const out = await halfClosed([{ after: GREETING, send: envelope(tag) }, { after: GOT_354, send: `${body(tag)}QUIT\r\n` }]);
  assert.match(out, new RegExp(`${REPLIES.source}221 [^\\r]*\\r\\n$`), out);
  assert.is(await queuedWith(tag), 1);
});

test('the same without QUIT: the 250 after the data, then our close; queued once', async () => {
  const tag = `noquit${Date.now()}`;
  const out = await halfClosed([{ after: GREETING, send: envelope(tag) }, { after: GOT_354, send: body(tag) }]);
  assert.match(out, new RegExp(`${REPLIES.source}$`), out);
  assert.is(await queuedWith(tag), 1);
});

test('MAIL/RCPT pipelined then a half-close at once: both replies (after their asynchronous checks), then our close', async () => {
  const tag = `envonly${Date.now()}`;
  const out = await halfClosed([{ after: GREETING, send: `EHLO client.test\r\nMAIL FROM:<${tag}@client.test>\r\nRCPT TO:<someone@elsewhere.example>\r\nRCPT TO:<other@elsewhere.example>\r\n` }]);
  assert.match(out, /\r\n250 2\.1\.0 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n250 2\.1\.5 [^\r]*\r\n$/, out);
  assert.is(await queuedWith(tag), 0);
});

test('a whole transaction in one write, then a half-close: every reply (the data before 354 is refused), nothing queued', async () => {
  const tag = `unsync${Date.now()}`;
  const out = await halfClosed([{ after: GREETING, send: `${envelope(tag)}${body(tag)}QUIT\r\n` }]);
  assert.match(out, /\r\n354 [^\r]*\r\n554 5\.5\.0 [^\r]*unsynchronised pipelining[^\r]*\r\n221 [^\r]*\r\n$/, out);
  assert.is(await queuedWith(tag), 0);
});

test('a half-close in the middle of DATA stores nothing, and the connection is closed', async () => {
  const tag = `cutdata${Date.now()}`;
  const out = await halfClosed([{ after: GREETING, send: envelope(tag) }, { after: GOT_354, send: `Subject: ${tag}\r\n\r\nhel` }]);
  assert.match(out, /\r\n354 [^\r]*\r\n$/, out);
  assert.is(await queuedWith(tag), 0);
  // The daemon is still fine: a whole transaction afterwards is queued.
  const after = `after${Date.now()}`;
  await halfClosed([{ after: GREETING, send: envelope(after) }, { after: GOT_354, send: `${body(after)}QUIT\r\n` }]);
  assert.is(await queuedWith(after), 1);
});

test.run();
