// The milter client against a real milter: OpenDKIM (apt) in signing mode on loopback; plus a
// scripted stand-in for the replies OpenDKIM never sends (REJECT, REPLYCODE, CHGHEADER, REPLBODY…).

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import { pkt, raw } from '../helpers/milter-packets.js';
import * as assert from 'uvu/assert';
import { openMilterSession, replyCodeVerdict, BODY_CHUNK, type MilterSession } from '../../src/checks/milter.js';
import { canConnect, freePort, waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot, writeFile } from '../helpers/tmp.js';

const test = suite('milter');
// OpenDKIM refuses a config or key under a world-writable directory such as /tmp, so its files
// live under /run (root's, 0755) when we may write there, else under the build dir — which is
// only safe when the checkout itself is not below /tmp.
const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const safeDirs: string[] = [];
function safeDir(): string {
  const base = isRoot() ? '/run/tidemail-test' : path.join(REPO, 'dist', 'test-tmp');
  fs.mkdirSync(base, { recursive: true, mode: 0o755 });
  const d = fs.mkdtempSync(path.join(base, 'opendkim-'));
  fs.chmodSync(d, 0o700);
  safeDirs.push(d);
  return d;
}
const procs: ChildProcess[] = [];
const sessions: MilterSession[] = [];
test.after(async () => {
  for (const s of sessions) await s.close().catch(() => undefined);
  for (const p of procs) p.kill('SIGKILL');
  cleanupTmp();
  for (const d of safeDirs) fs.rmSync(d, { recursive: true, force: true });
});

async function startOpendkim(): Promise<{ port: number; log: () => string; publicKey: KeyObject }> {
  const dir = safeDir();
  execFileSync('opendkim-genkey', ['-D', dir, '-d', 'example.org', '-s', 'test']);
  const port = await freePort();
  const conf = writeFile(
    path.join(dir, 'opendkim.conf'),
    [
      'Syslog no',
      'Mode s',
      'Domain example.org',
      'Selector test',
      `KeyFile ${path.join(dir, 'test.private')}`,
      `Socket inet:${port}@127.0.0.1`,
      'Canonicalization simple/simple',
      'SignatureAlgorithm rsa-sha256',
      '',
    ].join('\n'),
  );
  const proc = spawn('/usr/sbin/opendkim', ['-f', '-x', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  await waitFor('opendkim listening', async () => {
    if (exited) throw new Error(`opendkim exited:\n${out}`);
    return canConnect(port);
  }, 10_000, 100);
  // test.txt is the DNS TXT record: "v=DKIM1; h=sha256; k=rsa; " "p=MIIB…" split into strings.
  const txt = fs.readFileSync(path.join(dir, 'test.txt'), 'utf8').replace(/"\s*"/g, '');
  const p = /p=([A-Za-z0-9+/=]+)/.exec(txt)?.[1] ?? '';
  const publicKey = createPublicKey({ key: Buffer.from(p, 'base64'), format: 'der', type: 'spki' });
  return { port, log: () => out, publicKey };
}

/** RFC 6376 3.7 for simple/simple and rsa-sha256, enough to check OpenDKIM's output. */
function verifyDkim(sig: string, headers: [string, string][], publicKey: KeyObject): boolean {
  const tags = new Map(sig.replace(/\s+/g, '').split(';').filter(Boolean).map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)] as const));
  let data = '';
  const unused = [...headers];
  for (const name of (tags.get('h') ?? '').split(':')) {
    // Headers are signed bottom-up when a name repeats (5.4.2); ours do not repeat.
    const i = unused.findIndex(([n]) => n.toLowerCase() === name.toLowerCase());
    if (i < 0) continue;
    const [n, v] = unused.splice(i, 1)[0]!;
    data += `${n}: ${v}\r\n`;
  }
  data += `DKIM-Signature: ${sig.replace(/\r?\n/g, '\r\n').replace(/(;\s*b=)[^;]*/, '$1')}`;
  return verify('sha256', Buffer.from(data), publicKey, Buffer.from(tags.get('b') ?? '', 'base64'));
}

const CRLF = '\r\n';
const BODY = Buffer.from(['Hello Bob,', '', 'this message is signed by OpenDKIM.', ''].join(CRLF));

async function sendMessage(s: MilterSession, from: string, headers: [string, string][], body: Buffer) {
  assert.is((await s.connect('localhost', '127.0.0.1', 40000, '4', { j: 'tidemail.test', _: 'localhost [127.0.0.1]' })).action, 'next');
  assert.is((await s.helo('client.example.org')).action, 'next');
  assert.is((await s.mail(from, [], { i: 'q1', mail_addr: from })).action, 'next');
  assert.is((await s.rcpt('bob@example.net', [], { rcpt_addr: 'bob@example.net' })).action, 'next');
  for (const [n, v] of headers) assert.is((await s.header(n, v)).action, 'next');
  assert.is((await s.endHeaders()).action, 'next');
  assert.is((await s.body(body)).action, 'next');
  return s.endMessage({ i: 'q1' });
}

test('OpenDKIM signs mail from its domain: a DKIM-Signature header comes back', async () => {
  const dkim = await startOpendkim();
  const s = await openMilterSession({ address: `inet:${dkim.port}@127.0.0.1`, timeoutMs: 5000 });
  sessions.push(s);
  const headers: [string, string][] = [
    ['From', 'Alice <alice@example.org>'],
    ['To', 'bob@example.net'],
    ['Subject', 'signed'],
    ['Date', 'Wed, 25 Nov 2026 20:00:00 +0000'],
    ['Message-ID', '<m1@example.org>'],
  ];
  const r = await sendMessage(s, 'alice@example.org', headers, BODY);
  assert.ok(r.verdict.action === 'next' || r.verdict.action === 'accept', JSON.stringify(r.verdict));
  const sig = [...r.addHeaders, ...r.insertHeaders].find((h) => h.name === 'DKIM-Signature');
  assert.ok(sig, `no DKIM-Signature in ${JSON.stringify(r)}\n${dkim.log()}`);
  const tags = sig.value.replace(/\s+/g, '');
  assert.match(tags, /(^|;)d=example\.org(;|$)/);
  assert.match(tags, /(^|;)s=test(;|$)/);
  // The body hash proves the body arrived byte for byte (simple canonicalization, RFC 6376 3.4.3).
  const bh = createHash('sha256').update(BODY).digest('base64');
  assert.ok(tags.includes(`bh=${bh}`), `bh mismatch: ${tags}`);
  // And the signature verifies with the generated public key over the headers we sent
  // (simple header canonicalization: `Name: value` CRLF, then the DKIM-Signature without b=).
  assert.ok(verifyDkim(sig.value, headers, dkim.publicKey), `signature does not verify: ${sig.value}`);

  // The same connection carries a second message; a foreign From domain is not signed.
  assert.is((await s.mail('mallory@example.com')).action, 'next');
  assert.is((await s.rcpt('bob@example.net')).action, 'next');
  await s.header('From', 'mallory@example.com');
  await s.endHeaders();
  await s.body(BODY);
  const r2 = await s.endMessage();
  assert.ok(r2.verdict.action === 'next' || r2.verdict.action === 'accept');
  assert.not.ok([...r2.addHeaders, ...r2.insertHeaders].some((h) => h.name === 'DKIM-Signature'));
});

test('a large body reaches OpenDKIM in chunks of at most 64 KiB', async () => {
  const dkim = await startOpendkim();
  const s = await openMilterSession({ address: `127.0.0.1:${dkim.port}` });
  sessions.push(s);
  const line = 'x'.repeat(998) + CRLF;
  const big = Buffer.from(line.repeat(Math.ceil((3 * BODY_CHUNK) / line.length)));
  const r = await sendMessage(s, 'alice@example.org', [['From', 'alice@example.org'], ['Subject', 'big']], big);
  const sig = [...r.addHeaders, ...r.insertHeaders].find((h) => h.name === 'DKIM-Signature');
  assert.ok(sig);
  assert.ok(sig.value.replace(/\s+/g, '').includes(`bh=${createHash('sha256').update(big).digest('base64')}`));
});

/** A scripted milter: answers OPTNEG, then each command with the next scripted packets. */
async function scriptedMilter(script: Record<string, Buffer[]>): Promise<{ port: number; seen: string[]; close: () => void }> {
  const seen: string[] = [];
  const pkt = (cmd: string, data: Buffer = Buffer.alloc(0)) => {
    const h = Buffer.alloc(5);
    h.writeUInt32BE(data.length + 1);
    h.write(cmd, 4, 'latin1');
    return Buffer.concat([h, data]);
  };
  const server = net.createServer((sock) => {
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const cmd = String.fromCharCode(buf[4]!);
        buf = buf.subarray(4 + len);
        seen.push(cmd);
        if (cmd === 'O') {
          const d2 = Buffer.alloc(12);
          d2.writeUInt32BE(6, 0);
          d2.writeUInt32BE(0x33, 4);
          d2.writeUInt32BE(0x200, 8); // NODATA: no DATA command, please
          sock.write(pkt('O', d2));
        } else if (cmd === 'D' || cmd === 'A' || cmd === 'Q') {
          continue;
        } else {
          for (const p of script[cmd] ?? [pkt('c')]) sock.write(p);
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, seen, close: () => server.close() };
}

test('recipient refusals, modifications and quarantine are reported as the milter sent them', async () => {
  const m = await scriptedMilter({
    R: [pkt('y', '550 5.1.1 no such user')],
    E: [pkt('p'), pkt('m', 1, 'Subject', '[SPAM] hi'), pkt('i', 0, 'X-Scan', 'yes'), pkt('h', 'X-Tail', 'end'),
      raw('b', 'new body\r\n'), pkt('q', 'looks bad'), pkt('c')],
  });
  const s = await openMilterSession({ address: `inet:${m.port}@127.0.0.1` });
  sessions.push(s);
  await s.connect('h', '192.0.2.1', 25);
  await s.mail('a@example.org');
  assert.equal(await s.rcpt('x@example.org'), { action: 'reject', code: 550, enhanced: '5.1.1', text: 'no such user' });
  await s.header('Subject', 'hi');
  await s.endHeaders();
  await s.body(Buffer.from('body\r\n'));
  const r = await s.endMessage();
  assert.equal(r.verdict, { action: 'next' });
  assert.equal(r.changeHeaders, [{ index: 1, name: 'Subject', value: '[SPAM] hi' }]);
  assert.equal(r.insertHeaders, [{ index: 0, name: 'X-Scan', value: 'yes' }]);
  assert.equal(r.addHeaders, [{ name: 'X-Tail', value: 'end' }]);
  assert.equal(Buffer.concat(r.replaceBody ?? []).toString(), 'new body\r\n');
  assert.is(r.quarantine, 'looks bad');
  assert.not.ok(m.seen.includes('T'), 'DATA sent although the milter set NODATA');
  m.close();
});

test('REJECT at MAIL settles the message; TEMPFAIL, DISCARD and 421 map to verdicts', async () => {
  const m = await scriptedMilter({ M: [pkt('r')] });
  const s = await openMilterSession({ address: `127.0.0.1:${m.port}` });
  sessions.push(s);
  assert.is((await s.mail('a@example.org')).action, 'reject');
  // Nothing more is sent for this message but an ABORT; the refusal stands.
  const before = m.seen.length;
  assert.is((await s.rcpt('b@example.org')).action, 'reject');
  assert.is((await s.endMessage()).verdict.action, 'reject');
  await waitFor('ABORT', () => m.seen.length > before, 2000, 10);
  assert.equal(m.seen.slice(before), ['A']);
  m.close();
  const m2 = await scriptedMilter({ B: [pkt('d')] });
  const s2 = await openMilterSession({ address: `127.0.0.1:${m2.port}` });
  sessions.push(s2);
  await s2.mail('a@example.org');
  await s2.rcpt('b@example.org');
  assert.is((await s2.body(Buffer.from('x'))).action, 'accept');
  const r = await s2.endMessage();
  assert.is(r.discard, true);
  m2.close();
  assert.equal(replyCodeVerdict('451 4.7.1 later'), { action: 'tempfail', code: 451, enhanced: '4.7.1', text: 'later' });
  assert.equal(replyCodeVerdict('421 bye').action, 'disconnect');
  assert.equal(replyCodeVerdict('554 no'), { action: 'reject', code: 554, enhanced: '5.7.1', text: 'no' });
});

test('a milter that does not answer fails the session with an error', async () => {
  const server = net.createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const err = await openMilterSession({ address: `127.0.0.1:${port}`, timeoutMs: 200 }).then(() => null, (e: Error) => e);
  assert.match(String(err?.message), /no reply within 200 ms/);
  server.close();
});

test.run();
