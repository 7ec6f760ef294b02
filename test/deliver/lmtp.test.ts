// LMTP delivery against a real Dovecot LMTP server (test/helpers/dovecot-lmtp.ts): one
// transaction, a result per recipient, the mail in the users' Maildirs.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { deliverLmtp } from '../../src/deliver/lmtp.js';
import { startDovecotLmtp, type DovecotLmtp } from '../helpers/dovecot-lmtp.js';
import { freePort } from '../helpers/ports.js';
import { cleanupTmp } from '../helpers/tmp.js';

// Started by the first test rather than in test.before, where a failure would go unreported.
let started: Promise<DovecotLmtp> | undefined;
let dovecot: DovecotLmtp;
test.before.each(async () => {
  dovecot = await (started ??= startDovecotLmtp(['alice', 'bob', 'carol']));
});
test.after(async () => {
  await started?.then((d) => d.stop(), () => undefined);
  cleanupTmp();
});

const message = (subject: string) => `From: sender@example.org\r\nTo: alice@example.org\r\nSubject: ${subject}\r\n\r\nHello.\r\n.leading dot\r\nFrom the start of a line\r\n`;
const body = (raw: string) => () => Readable.from([Buffer.from(raw)]);

test('unix socket: two users get the mail, an unknown user is refused with 550 5.1.1', async () => {
  const results = await deliverLmtp(
    { socket: dovecot.socket },
    body(message('over the socket')),
    'sender@example.org',
    ['alice@example.org', 'bob@example.org', 'nobody-here@example.org'],
    'tidemail.test',
  );
  assert.equal([...results.keys()], ['alice@example.org', 'bob@example.org', 'nobody-here@example.org']);
  assert.is(results.get('alice@example.org')!.outcome, 'ok', JSON.stringify(results.get('alice@example.org')));
  assert.is(results.get('bob@example.org')!.outcome, 'ok');
  const unknown = results.get('nobody-here@example.org')!;
  assert.is(unknown.outcome, 'permfail');
  assert.match(unknown.message, /^550 5\.1\.1 /);
  assert.is(unknown.remote, dovecot.socket);

  for (const user of ['alice', 'bob']) {
    const [stored, ...more] = dovecot.messages(user);
    assert.is(more.length, 0, `one message for ${user}`);
    assert.match(stored!, /^Return-Path: <sender@example\.org>\n/);
    // Dovecot writes Delivered-To only when a transaction has a single recipient.
    assert.not.match(stored!, /^Delivered-To:/m);
    // Dot-stuffing undone and LF line ends, as Dovecot stores Maildir files.
    assert.ok(stored!.endsWith('Subject: over the socket\n\nHello.\n.leading dot\nFrom the start of a line\n'), stored);
  }
});

test('TCP host:port works the same, and a bare local part is a recipient too', async () => {
  const results = await deliverLmtp({ host: '127.0.0.1', port: dovecot.port }, body(message('over tcp')), '', ['carol'], 'tidemail.test');
  assert.equal(results.get('carol'), { outcome: 'ok', message: `250 2.0.0 delivered by LMTP 127.0.0.1:${dovecot.port}`, remote: `127.0.0.1:${dovecot.port}` });
  const [stored] = dovecot.messages('carol');
  assert.match(stored!, /^Return-Path: <>\nDelivered-To: carol\b/);
  assert.match(stored!, /Subject: over tcp\n/);
});

test('a store that cannot write one mailbox answers 4xx for it alone: tempfail there, ok elsewhere', async () => {
  const home = path.dirname(dovecot.maildir('bob'));
  fs.rmSync(dovecot.maildir('bob'), { recursive: true, force: true });
  fs.chmodSync(home, 0o500); // no Maildir can be made in it, whoever Dovecot runs as
  try {
    const results = await deliverLmtp({ socket: dovecot.socket }, body(message('bob cannot')), 'sender@example.org', ['bob@example.org', 'alice@example.org'], 'tidemail.test');
    const bob = results.get('bob@example.org')!;
    assert.is(bob.outcome, 'tempfail', JSON.stringify(bob));
    assert.match(bob.message, /^4\d\d /);
    assert.is(results.get('alice@example.org')!.outcome, 'ok');
  } finally {
    fs.chmodSync(home, 0o700);
  }
});

test('a read error of the queued message mid-data: tempfail for all, nothing stored', async () => {
  const before = ['alice', 'bob'].map((u) => dovecot.messages(u).length);
  const failing = () =>
    Readable.from(
      (async function* () {
        yield Buffer.from(message('half') + 'h'.repeat(200_000) + '\r\n');
        await new Promise((r) => setTimeout(r, 100));
        throw new Error('queue file vanished');
      })(),
    );
  const results = await deliverLmtp({ socket: dovecot.socket }, failing, 'sender@example.org', ['alice@example.org', 'bob@example.org'], 'tidemail.test');
  for (const r of results.values()) {
    assert.is(r.outcome, 'tempfail', JSON.stringify(r));
    assert.match(r.message, /queue file vanished/);
  }
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(['alice', 'bob'].map((u) => dovecot.messages(u).length), before);
  assert.not.match(dovecot.messages('alice').join(''), /Subject: half/);
});

test('nobody listening: tempfail for every recipient, with the reason', async () => {
  const bySocket = await deliverLmtp({ socket: path.join(dovecot.dir, 'no-such.sock') }, body(message('x')), 'a@b.example', ['alice', 'bob'], 'tidemail.test');
  for (const r of bySocket.values()) {
    assert.is(r.outcome, 'tempfail');
    assert.match(r.message, /^4\.4\.1 cannot connect to LMTP .*no-such\.sock: .*ENOENT/);
  }
  const port = await freePort();
  const byTcp = await deliverLmtp({ host: '127.0.0.1', port }, body(message('x')), 'a@b.example', ['alice'], 'tidemail.test');
  assert.is(byTcp.get('alice')!.outcome, 'tempfail');
  assert.match(byTcp.get('alice')!.message, /ECONNREFUSED/);
});

test.run();
