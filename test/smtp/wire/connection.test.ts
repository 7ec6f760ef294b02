// The SMTP engine (src/smtp/wire/) over real loopback sockets, with hooks that accept
// everything and record the messages: how bytes are cut does not change what is read, the
// body streams instead of piling up, and hostile clients (endless lines, endless DATA, replies
// never read, garbage, TLS handshake junk) get bounded memory and a clean end.

import net from 'node:net';
import tls from 'node:tls';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SmtpListeners } from '../../../src/smtp/wire/listener.js';
import { TlsContext } from '../../../src/smtp/wire/tls-context.js';
import type { SessionHooks, SessionLimits, WireSession } from '../../../src/smtp/wire/types.js';
import { testCerts } from '../../helpers/certs.js';
import { freePort, sleep, waitFor } from '../../helpers/ports.js';
import { RawSmtp } from '../../helpers/smtp-client.js';

interface Received {
  body: Buffer;
  /** Sizes of the pieces the hook was handed. */
  pieces: number[];
  /** Bytes the hook had read before the client sent the final dot (see `dotSent`). */
  beforeDot: number;
  unsync: boolean;
  protocol: string;
}

const running: SmtpListeners[] = [];
const clients: RawSmtp[] = [];
test.after.each(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const l of running.splice(0)) await l.close();
});

let dotSent = false;

async function engine(over: Partial<SessionLimits> = {}, opts: { tls?: boolean; implicit?: boolean; maxClients?: number; maxPerIp?: number; trusted?: boolean; onData?: SessionHooks['onData'] } = {}) {
  const got: Received[] = [];
  /** Body bytes the default hook has read so far, and the errors its reads ended with. */
  const reading = { bytes: 0, failed: [] as Error[] };
  const listeners = new SmtpListeners({ maxClients: opts.maxClients ?? 50, maxConnectionsPerIp: opts.maxPerIp ?? 50, isTrusted: () => opts.trusted ?? true });
  running.push(listeners);
  const limits: SessionLimits = { name: 'wire.test', maxMessageSize: 1_000_000, commandTimeoutMs: 10_000, maxCommandLength: 512, sessionTimeoutMs: 0, maxErrors: 0, greetDelayMs: 0, ...over };
  const hooks: SessionHooks = {
    onMailFrom: () => null,
    onRcptTo: () => null,
    onAuth: async (a) => {
      if (a.password === 'pw') return a.username;
      throw Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 });
    },
    onData: opts.onData ?? async function onData(body, s: WireSession) {
      const parts: Buffer[] = [];
      let beforeDot = 0;
      try {
        for await (const b of body) {
          parts.push(Buffer.from(b));
          reading.bytes += b.length;
          if (!dotSent) beforeDot += b.length;
        }
      } catch (err) {
        reading.failed.push(err as Error);
        throw err;
      }
      const { transmissionType } = await import('../../../src/smtp/wire/types.js');
      got.push({ body: Buffer.concat(parts), pieces: parts.map((p) => p.length), beforeDot, unsync: s.unsyncPipelining, protocol: transmissionType(s) });
      return `2.0.0 Ok: got ${Buffer.concat(parts).length}`;
    },
  };
  const port = await freePort();
  const ctx = opts.tls ? await TlsContext.create({ key: Buffer.from(testCerts().key), cert: Buffer.from(testCerts().cert) }) : null;
  await listeners.listen({ host: '127.0.0.1', port, limits, hooks, tls: ctx, implicitTls: !!opts.implicit });
  return { port, got, reading };
}

async function client(port: number): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port);
  c.sock.setNoDelay(true);
  clients.push(c);
  return c;
}

/** Writes `bytes` one at a time, each in its own segment. */
async function drip(c: RawSmtp, bytes: string): Promise<void> {
  for (const ch of Buffer.from(bytes, 'latin1')) {
    c.write(Buffer.from([ch]));
    await new Promise((r) => setImmediate(r));
  }
}

test('drip-fed, byte by byte: commands, dot-stuffing and the final dot split across segments', async () => {
  const { port, got } = await engine();
  const c = await client(port);
  assert.match(await c.reply(), /^220 wire\.test ESMTP/);
  await drip(c, 'EHLO drip.test\r\n');
  assert.match(await c.reply(), /^250-wire\.test Nice to meet you, \[127\.0\.0\.1\]/);
  await drip(c, 'MAIL FROM:<a@x.test>\r\n');
  assert.match(await c.reply(), /^250 2\.1\.0 /);
  await drip(c, 'RCPT TO:<b@x.test>\r\n');
  assert.match(await c.reply(), /^250 2\.1\.5 /);
  await drip(c, 'DATA\r\n');
  assert.match(await c.reply(), /^354 /);
  await drip(c, 'Subject: d\r\n\r\n..leading dot\r\n...\r\nlast\r\n.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 Ok: got 38/);
  assert.is(got[0]!.body.toString(), 'Subject: d\r\n\r\n.leading dot\r\n..\r\nlast\r\n');
  assert.is(got[0]!.protocol, 'ESMTP');
  assert.match(await c.cmd('NOOP'), /^250 2\.0\.0 OK/);
});

test('a pipelined group gets its replies in order, in one write; commands after the dot wait for its reply', async () => {
  const { port, got } = await engine();
  const c = await client(port);
  await c.hello();
  let reads = 0;
  c.sock.on('data', () => reads++);
  c.write('RSET\r\nMAIL FROM:<a@x.test> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<b@x.test> NOTIFY=FAILURE,DELAY\r\nRCPT TO:<c@x.test>\r\nNOOP\r\n');
  for (const re of [/^250 2\.0\.0 Flushed/, /^250 2\.1\.0/, /^250 2\.1\.5/, /^250 2\.1\.5/, /^250 2\.0\.0 OK/]) assert.match(await c.reply(), re);
  assert.is(reads, 1, 'the five replies came in more than one segment');
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write('x\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 Ok: got 3/);
  assert.match(await c.reply(), /^250 2\.1\.0/);
  assert.match(await c.reply(), /^250 2\.1\.5/);
  assert.match(await c.reply(), /^354 /);
  c.write('y\r\n.\r\n');
  assert.match(await c.reply(), /^250 2\.0\.0 Ok: got 3/);
  assert.equal(got.map((g) => g.body.toString()), ['x\r\n', 'y\r\n']);
  assert.equal(got.map((g) => g.unsync), [false, false]);
});

test('message bytes sent together with DATA mark the session as unsynchronised', async () => {
  const { port, got } = await engine();
  const c = await client(port);
  await c.hello();
  c.write('MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\nearly\r\n.\r\n');
  for (const re of [/^250 /, /^250 /, /^354 /, /^250 2\.0\.0 Ok: got 7/]) assert.match(await c.reply(), re);
  assert.is(got[0]!.unsync, true);
});

test('endless DATA streams: the hook reads while the client sends, in bounded pieces', async () => {
  const { port, got } = await engine({ maxMessageSize: 0 });
  const c = await client(port);
  await c.hello();
  assert.match(await c.cmd('MAIL FROM:<a@x.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<b@x.test>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  dotSent = false;
  const line = Buffer.from('q'.repeat(998) + '\r\n');
  const total = 40 * 1024 * 1024;
  for (let sent = 0; sent < total; sent += line.length * 64) {
    if (!c.sock.write(Buffer.concat(Array(64).fill(line)))) await new Promise((r) => c.sock.once('drain', r));
  }
  dotSent = true;
  c.write('.\r\n');
  assert.match(await c.reply(60_000), /^250 2\.0\.0 Ok: got /);
  const r = got[0]!;
  assert.ok(r.body.length >= total, `${r.body.length} bytes`);
  assert.ok(r.beforeDot > total / 2, `only ${r.beforeDot} bytes reached the hook before the end: buffered, not streamed`);
  assert.ok(Math.max(...r.pieces) <= 1024 * 1024, `a piece of ${Math.max(...r.pieces)} bytes`);
});

test('a DATA hook that fails before reading the body: the rest of the data is dropped and the reply follows the dot', async () => {
  // As when the queue cannot open the message (disk full): the session must read on to the
  // dot, not stop once the unread body fills its buffer and leave the client to time out.
  const { port } = await engine({ commandTimeoutMs: 60_000 }, { onData: async () => Promise.reject(Object.assign(new Error('4.3.0 queue not writable'), { responseCode: 451 })) });
  const c = await client(port);
  await c.hello();
  assert.match(await c.cmd('MAIL FROM:<a@x.test>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<b@x.test>'), /^250 /);
  assert.match(await c.cmd('DATA'), /^354 /);
  const line = Buffer.from('q'.repeat(998) + '\r\n');
  const until = Date.now() + 20_000;
  for (let sent = 0; sent < 4 * 1024 * 1024; sent += line.length * 64) {
    if (c.sock.write(Buffer.concat(Array(64).fill(line)))) continue;
    const drained = await Promise.race([new Promise((r) => c.sock.once('drain', () => r(true))), new Promise((r) => setTimeout(() => r(false), Math.max(0, until - Date.now())).unref())]);
    assert.ok(drained, `the server stopped reading after ${sent} bytes of a message nobody reads`);
  }
  c.write('.\r\n');
  assert.match(await c.reply(10_000), /^451 4\.3\.0 queue not writable/);
  assert.match(await c.cmd('NOOP'), /^250 /);
});

test('a client that never reads its replies is not read either (back-pressure), then gets every reply', async () => {
  const { port } = await engine();
  const c = await client(port);
  await c.hello();
  // Our own socket from here on: RawSmtp would keep reading.
  c.sock.removeAllListeners('data');
  c.sock.pause();
  // In 60 KiB writes: writableLength then tells how much the server has not taken yet.
  const n = 1_500_000;
  const piece = Buffer.from('NOOP\r\n'.repeat(10_000));
  for (let i = 0; i < n / 10_000; i++) c.sock.write(piece);
  // Kernel buffers take some megabytes; after that the server stops reading, as its replies pile
  // up unread, and our bytes stay in our own buffer.
  const stuck = await waitFor('the server to stop reading', async () => {
    const before = c.sock.writableLength;
    await sleep(1000);
    return before > 0 && c.sock.writableLength === before ? before : 0;
  }, 15_000, 0);
  // And it stays so: a server that only lags behind takes the rest (5 MB) within this; one
  // that waits may take a little more as the kernel's windows grow.
  await sleep(2000);
  const taken = stuck - c.sock.writableLength;
  assert.ok(taken <= 1024 * 1024, `the server went on reading (${taken} bytes) while its replies were not read`);
  const ok = '250 2.0.0 OK\r\n';
  let bytes = 0;
  let sample = '';
  c.sock.on('data', (d: Buffer) => {
    bytes += d.length;
    if (sample.length < 1000) sample += d.toString('latin1');
  });
  c.sock.resume();
  await waitFor(`${n} replies`, () => bytes >= n * ok.length, 60_000);
  await sleep(100);
  assert.is(bytes, n * ok.length);
  assert.ok(sample.startsWith(ok.repeat(50)), sample.slice(0, 100));
});

test('an endless command line is cut off with 421 as soon as it is over the limit', async () => {
  const { port } = await engine({ maxCommandLength: 600 });
  const c = await client(port);
  await c.hello();
  const junk = Buffer.alloc(64 * 1024, 'A');
  for (let i = 0; i < 64 && !c.closed; i++) {
    c.sock.write(junk);
    await new Promise((r) => setImmediate(r));
  }
  assert.match(await c.reply(), /^421 .*too long/i);
  await waitFor('the connection to close', () => c.closed, 5000);
});

test('NUL, escape and 8-bit garbage as commands get 500; the session stays usable', async () => {
  const { port } = await engine();
  const c = await client(port);
  await c.hello();
  c.write(Buffer.from('\0\0\0\r\n\x1b[2J\x1b]0;x\x07\r\n\xff\xfe\xfd\r\nMAIL FROM:<a\0b@x.test>\r\nEHLO a\0b\r\n', 'latin1'));
  for (let i = 0; i < 3; i++) assert.match(await c.reply(), /^500 5\.5\.2 /);
  assert.match(await c.reply(), /^501 5\.1\.7 /);
  const helo = await c.reply();
  assert.match(helo, /^501 /);
  assert.not.match(helo, /[\0\x1b]/);
  assert.match(await c.cmd('NOOP'), /^250 /);
});

test('max_errors counts refusals; the one that reaches it is followed by 421', async () => {
  const { port } = await engine({ maxErrors: 3 });
  const c = await client(port);
  await c.hello();
  c.write('BAD1\r\nBAD2\r\nNOOP\r\nBAD3\r\nNOOP\r\n');
  assert.match(await c.reply(), /^500 /);
  assert.match(await c.reply(), /^500 /);
  assert.match(await c.reply(), /^250 /);
  assert.match(await c.reply(), /^500 /);
  assert.match(await c.reply(), /^421 4\.7\.0 Too many errors/);
  await waitFor('the connection to close', () => c.closed, 5000);
});

test('implicit TLS: handshake garbage ends that connection only; the next one gets no second STARTTLS, AUTH, ESMTPSA', async () => {
  const { port, got } = await engine({}, { tls: true, implicit: true });
  const junk = net.connect(port, '127.0.0.1');
  let junkClosed = false;
  junk.on('error', () => undefined);
  junk.on('data', () => undefined);
  junk.on('close', () => (junkClosed = true));
  await new Promise((r) => junk.once('connect', r));
  junk.write(Buffer.from('\x16\x03\x01\x00\x05hello, this is not a ClientHello\r\n'));
  await waitFor('the junk connection to close', () => junkClosed, 5000);
  junk.destroy();
  const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
  await new Promise((r) => s.once('secureConnect', r));
  let buf = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (buf += d));
  await waitFor('the greeting', () => /^220 /.test(buf), 5000);
  const plain = (p: string) => Buffer.from(`\0u\0${p}`).toString('base64');
  s.write(`EHLO t\r\nSTARTTLS\r\nAUTH PLAIN ${plain('wrong')}\r\nAUTH PLAIN ${plain('pw')}\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n`);
  await waitFor('354', () => /354 /.test(buf), 5000);
  assert.not.match(buf, /250[ -]STARTTLS/);
  assert.match(buf, /^250-AUTH PLAIN LOGIN\r$/m);
  assert.match(buf, /^503 5\.5\.1 Error: TLS already active\r\n535 5\.7\.8 Authentication credentials invalid\r\n235 2\.7\.0 Authentication successful\r$/m);
  s.write('z\r\n.\r\nQUIT\r\n');
  await waitFor('221', () => /221 /.test(buf), 5000);
  s.destroy();
  assert.is(got[0]!.protocol, 'ESMTPSA');
});

/** One implicit-TLS session's greeting, or null when the connection was closed before it. */
function greeting(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.includes('\n')) {
        s.destroy();
        resolve(buf);
      }
    });
    s.on('error', () => resolve(null));
    s.on('close', () => resolve(buf || null));
  });
}

test('implicit TLS: sockets that never finish their handshake count against max_clients and the per-address cap', async () => {
  const open = async (port: number) => {
    const raw = net.connect(port, '127.0.0.1');
    const state = { closed: false };
    raw.on('error', () => undefined);
    raw.on('close', () => (state.closed = true));
    await new Promise((r) => raw.once('connect', r));
    return { raw, state };
  };
  for (const [cap, opts] of [
    ['max_clients', { maxClients: 3, maxPerIp: 50, trusted: true }],
    ['max_connections_per_ip', { maxClients: 50, maxPerIp: 3, trusted: false }],
  ] as const) {
    const { port } = await engine({}, { tls: true, implicit: true, ...opts });
    const silent: { raw: net.Socket; state: { closed: boolean } }[] = [];
    for (let i = 0; i < 6; i++) silent.push(await open(port));
    // The first three wait in their handshake; the other three are closed at once.
    await waitFor(`the sockets over ${cap} to close`, () => silent.filter((s) => s.state.closed).length >= 3, 5000);
    assert.equal(silent.map((s) => s.state.closed), [false, false, false, true, true, true], cap);
    // One that gave up frees its place for a real client.
    silent[0]!.raw.destroy();
    await waitFor('the freed socket to be counted out', () => silent[0]!.state.closed, 5000);
    // The server may see the new connection before that close: a refused try is made again.
    const greeted = await waitFor(`a greeting under ${cap}`, () => greeting(port), 10_000);
    assert.match(greeted, /^220 /);
    for (const x of silent) x.raw.destroy();
  }
});

test('STARTTLS: what was pipelined after it in clear is dropped; the session starts over inside TLS', async () => {
  const { port, got } = await engine({}, { tls: true });
  const c = await client(port);
  const ehlo = await c.hello();
  assert.match(ehlo, /^250-STARTTLS\r?$/m);
  c.write('STARTTLS\r\nEHLO injected.test\r\n');
  assert.match(await c.reply(), /^220 2\.0\.0 Ready to start TLS/);
  c.sock.removeAllListeners('data');
  const s = tls.connect({ socket: c.sock, rejectUnauthorized: false });
  await new Promise((r) => s.once('secureConnect', r));
  let buf = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (buf += d));
  s.write('MAIL FROM:<a@x.test>\r\n');
  await waitFor('a reply', () => /\r\n$/.test(buf), 5000);
  assert.match(buf, /^503 5\.5\.1 Error: send HELO\/EHLO first/, 'the EHLO from before the handshake still counted');
  buf = '';
  s.write('EHLO again.test\r\n');
  await waitFor('EHLO reply', () => /^250 /m.test(buf), 5000);
  assert.not.match(buf, /STARTTLS/);
  buf = '';
  s.write('MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n');
  await waitFor('354', () => /354 /.test(buf), 5000);
  s.write('t\r\n.\r\n');
  await waitFor('250 for the message', () => /Ok: got 3/.test(buf), 5000);
  s.destroy();
  assert.is(got.length, 1);
  assert.is(got[0]!.protocol, 'ESMTPS');
});

test('a client gone in the middle of DATA: the hook\'s read fails, the listener is left clean', async () => {
  const { port, got, reading } = await engine();
  const c = await client(port);
  await c.hello();
  c.write('MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\n');
  await c.reply();
  await c.reply();
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write('half a mess\r\n');
  await waitFor('the hook to read the first line', () => reading.bytes > 0, 5_000);
  c.close();
  await waitFor('the hook\'s read to fail', () => reading.failed.length === 1, 5_000);
  assert.is(got.length, 0);
  const d = await client(port);
  assert.match(await d.hello(), /^250/);
});

/** The first line a new connection is sent (220 greeting or 421 refusal). */
function firstLine(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ port, host: '127.0.0.1' });
    let got = '';
    s.setEncoding('latin1');
    s.on('data', (t: string) => {
      got += t;
      if (got.includes('\r\n')) {
        s.destroy();
        resolve(got.split('\r\n')[0]!);
      }
    });
    s.on('error', reject);
  });
}

test('after QUIT the server closes at once, even when the client keeps its side open: its slot is free for the next client', async () => {
  const { port } = await engine({}, { maxClients: 1 });
  const a = net.createConnection({ port, host: '127.0.0.1', allowHalfOpen: true });
  let got = '';
  let ended = false;
  a.setEncoding('latin1');
  a.on('data', (t: string) => (got += t));
  a.on('end', () => (ended = true));
  a.on('error', () => undefined);
  await waitFor('the greeting', () => /^220 /.test(got), 5_000);
  a.write('QUIT\r\n');
  await waitFor('221 and the server\'s FIN', () => ended && /\r\n221 /.test(got), 5_000);
  // `a` never sends its FIN. Waiting for it (as for other closes, up to 5 s) would hold the only slot.
  const next = await waitFor('a greeting for the next client', async () => ((await firstLine(port)).startsWith('220 ') ? true : null), 2_500, 50);
  assert.ok(next);
  a.destroy();
});

test.run();
