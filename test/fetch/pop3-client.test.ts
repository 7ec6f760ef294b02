// The POP3 client against a real, private Dovecot: greeting, CAPA, USER/PASS, APOP, SASL PLAIN, STLS and
// implicit TLS with certificate checks, multi-line responses with dot-unstuffing, DELE + QUIT.

import { createHash } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Pop3Client, Pop3Error } from '../../src/fetch/pop3-client.js';
import { testCerts } from '../helpers/certs.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { cleanupTmp } from '../helpers/tmp.js';

let dc: Dovecot;
test.before(async () => {
  if (!haveDovecot()) throw new Error('dovecot is not installed (apt-get install dovecot-pop3d; .ci/run does this)');
  // dave's password is stored hashed, so Dovecot cannot check an APOP digest for him.
  const hashed = `{SHA256}${createHash('sha256').update('hashed-pw').digest('base64')}`;
  dc = await startDovecot({ users: { alice: 'wonder', bob: 'builder', carol: 'x', dave: hashed }, tls: true, apop: true, rawlog: true });
});
test.after(async () => {
  await dc?.stop();
  cleanupTmp();
});

const plain = () => Pop3Client.connect({ host: '127.0.0.1', port: dc.port, tls: 'none', timeoutMs: 5000 });
const ca = () => testCerts().caFile;

async function rejects(p: Promise<unknown>, re: RegExp): Promise<Pop3Error> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, Pop3Error);
    assert.match((err as Error).message, re);
    return err as Pop3Error;
  }
  throw new Error(`expected a rejection matching ${re}`);
}

test('greeting, CAPA, and a USER/PASS login', async () => {
  const c = await plain();
  assert.match(c.greeting, /Dovecot/);
  assert.match(c.apopTimestamp ?? '', /^<[^>]+@[^>]+>$/);
  assert.not.ok(c.secure);
  const caps = await c.capa();
  for (const cap of ['USER', 'UIDL', 'STLS']) assert.ok(caps.includes(cap), `CAPA lacks ${cap}: ${caps.join(', ')}`);
  await c.login('alice', 'wonder', 'user');
  assert.equal(await c.stat(), { count: 0, size: 0 });
  await c.quit();
  await waitFor('Dovecot to log the login', () => /Login: user=<alice>, method=PLAIN/.test(dc.log()));
});

test('APOP is used when the greeting carries a timestamp', async () => {
  const c = await plain();
  await c.login('alice', 'wonder');
  await c.quit();
  await waitFor('Dovecot to log an APOP login', () => /Login: user=<alice>, method=APOP/.test(dc.log()));
});

test('a refused APOP falls back to a PLAIN login (the server keeps only a hash)', async () => {
  const c = await plain();
  await c.login('dave', 'hashed-pw');
  await c.quit();
  await waitFor('Dovecot to log a PLAIN login for dave', () => /Login: user=<dave>, method=PLAIN/.test(dc.log()));
  assert.not.match(dc.log(), /Login: user=<dave>, method=APOP/);
  const strict = await plain();
  await rejects(strict.login('dave', 'hashed-pw', 'apop'), /refused APOP dave [0-9a-f]{32}: -ERR/);
  strict.close();
});

/** What the client sent in the plain-text sessions so far (Dovecot's pre-login rawlog). */
const sent = (from = 0) => dc.rawlog().slice(from).split(/\r?\n/).map((l) => l.replace(/^\d+\.\d+ /, ''));

test('SASL PLAIN: AUTH PLAIN with the credentials as initial response (RFC 5034)', async () => {
  const mark = dc.rawlog().length;
  const c = await plain();
  assert.ok((await c.saslMechanisms()).includes('PLAIN'));
  assert.equal(await c.login('alice', 'wonder', 'plain'), 'plain');
  assert.equal(await c.stat(), { count: 0, size: 0 });
  await c.quit();
  const ir = Buffer.from('\0alice\0wonder').toString('base64');
  await waitFor('the AUTH line in the rawlog', () => sent(mark).includes(`AUTH PLAIN ${ir}`));
  assert.not.ok(sent(mark).some((l) => /^(USER|PASS) /.test(l)), 'USER/PASS sent as well');
  const bad = await plain();
  const err = await rejects(bad.login('alice', 'wrong', 'plain'), /refused AUTH PLAIN \*\*\*\*: -ERR/);
  assert.not.match(err.message, /wrong|d3Jvbmc/, 'neither the password nor its base64 in errors');
  bad.close();
});

test('auto: APOP in plain text, SASL PLAIN over TLS when CAPA lists it', async () => {
  const c = await plain();
  assert.equal(await c.login('alice', 'wonder'), 'apop');
  await c.quit();
  const fs = await import('node:fs');
  for (const [tls, port] of [['starttls', dc.port], ['implicit', dc.tlsPort]] as const) {
    const before = (dc.log().match(/Login: user=<carol>, method=PLAIN, .*TLS/g) ?? []).length;
    const t = await Pop3Client.connect({ host: '127.0.0.1', port, tls, ca: fs.readFileSync(ca()) });
    assert.equal(await t.login('carol', 'x'), 'plain', tls);
    await t.quit();
    await waitFor(`a PLAIN login over ${tls} in the log`, () => (dc.log().match(/Login: user=<carol>, method=PLAIN, .*TLS/g) ?? []).length === before + 1);
  }
  assert.not.match(dc.log(), /user=<carol>, method=APOP/);
});

test('a wrong password is a Pop3Error carrying the -ERR line', async () => {
  const c = await plain();
  const err = await rejects(c.login('alice', 'wrong', 'user'), /refused PASS \*\*\*\*: -ERR/);
  assert.match(err.response ?? '', /^-ERR \[AUTH\] Authentication failed/);
  assert.not.match(err.message, /wrong/, 'the password must not appear in errors');
  c.close();
});

test('RETR is dot-unstuffed and 8-bit clean; LIST, UIDL; DELE is committed by QUIT', async () => {
  const raw = 'From: a@example.test\nSubject: dots\n\n.leading dot\n..two dots\n.\nünïcödé\nend\n';
  dc.deliver('bob', raw);
  dc.deliver('bob', 'Subject: second\n\nx\n');
  const c = await plain();
  await c.login('bob', 'builder', 'user');
  const list = await c.list();
  assert.equal([...list.keys()], [1, 2]);
  const uids = await c.uidl();
  assert.equal(uids.size, 2);
  assert.ok([...uids.values()].every((u) => u.length > 0));
  const msgs = await Promise.all([c.retr(1), c.retr(2)]);
  const bodies = msgs.map((m) => m.toString('utf8'));
  const first = bodies.find((b) => b.includes('Subject: dots'))!;
  assert.equal(first, raw.replace(/\n/g, '\r\n'));
  assert.equal(list.get(bodies.indexOf(first) + 1), Buffer.byteLength(first));
  const streamed: string[] = [];
  await c.retr(bodies.indexOf(first) + 1, (line) => void streamed.push(line.toString('utf8')));
  assert.equal(streamed, ['From: a@example.test', 'Subject: dots', '', '.leading dot', '..two dots', '.', 'ünïcödé', 'end']);
  await c.dele(1);
  await c.dele(2);
  await c.quit();
  assert.equal(dc.mailbox('bob'), []);
});

test('STLS: TLS after the greeting, the certificate verified against the given CA', async () => {
  const c = await Pop3Client.connect({ host: 'localhost', port: dc.port, tls: 'starttls', ca: await import('node:fs').then((fs) => fs.readFileSync(ca())) });
  assert.ok(c.secure);
  await c.login('carol', 'x', 'user');
  await c.quit();
  await waitFor('a TLS login in the log', () => /Login: user=<carol>, method=PLAIN, .*TLS/.test(dc.log()));
});

test('STLS and implicit TLS refuse a certificate that does not verify', async () => {
  await rejects(Pop3Client.connect({ host: '127.0.0.1', port: dc.port, tls: 'starttls', timeoutMs: 5000 }), /TLS to POP3 server 127\.0\.0\.1:\d+ failed: .*(certificate|self.signed)/i);
  await rejects(Pop3Client.connect({ host: '127.0.0.1', port: dc.tlsPort, tls: 'implicit', timeoutMs: 5000 }), /TLS to POP3 server .* failed/);
});

test('implicit TLS: verified with the CA, and refused for the wrong name', async () => {
  const fs = await import('node:fs');
  const caPem = fs.readFileSync(ca());
  const c = await Pop3Client.connect({ host: '127.0.0.1', port: dc.tlsPort, tls: 'implicit', ca: caPem });
  assert.ok(c.secure);
  assert.match(c.greeting, /Dovecot/);
  await c.login('carol', 'x', 'user');
  await c.quit();
  await rejects(Pop3Client.connect({ host: '127.0.0.1', port: dc.tlsPort, tls: 'implicit', ca: caPem, servername: 'pop.wrong.example' }), /TLS to POP3 server .* failed: .*(altnames|Hostname)/i);
});

test('nothing listening: a clear Pop3Error', async () => {
  const port = await freePort();
  await rejects(Pop3Client.connect({ host: '127.0.0.1', port, tls: 'none' }), new RegExp(`cannot connect to POP3 server 127\\.0\\.0\\.1:${port}: ECONNREFUSED`));
});

test.run();
