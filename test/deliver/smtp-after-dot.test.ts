// HeldAcrossLinkDown (src/deliver/smtp-after-dot.ts): which held session is cut when, on real
// sockets over loopback, with the clock and the host's address list given to it. The whole
// path — a reply lost while the carrier is down and resent after link-up, delivered once — is
// test/online/link-abort.test.ts, in a network namespace.

import net from 'node:net';
import { once } from 'node:events';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HeldAcrossLinkDown } from '../../src/deliver/smtp-after-dot.js';
import { waitFor } from '../helpers/ports.js';

/** A connected client socket (its localAddress is 127.0.0.1) and a way to close everything. */
async function connected(): Promise<{ tcp: net.Socket; close(): void }> {
  const server = net.createServer((s) => s.on('error', () => undefined));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const tcp = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(tcp, 'connect');
  return {
    tcp,
    close: () => {
      tcp.destroy();
      server.close();
    },
  };
}

test('while the link is down nothing is cut, however long', async () => {
  let now = 1_000_000;
  const held = new HeldAcrossLinkDown<string>(() => now, () => new Set(['127.0.0.1']));
  const c = await connected();
  try {
    let cuts = 0;
    held.hold('a', c.tcp, () => void cuts++);
    held.linkDown();
    now += 3_600_000;
    held.linkDown(); // a second link-down event while still down
    assert.is(cuts, 0);
    assert.is(held.size, 1);
  } finally {
    c.close();
  }
});

test('link up with our address gone from every interface: cut after one look again 2 s later', async () => {
  let now = 1_000_000;
  const held = new HeldAcrossLinkDown<string>(() => now, () => new Set(['10.9.9.9']));
  const c = await connected();
  try {
    let cuts = 0;
    held.hold('a', c.tcp, () => void cuts++);
    now += 30_000; // the regular wait would be 35 s
    const up = Date.now();
    held.linkUp();
    assert.is(cuts, 0);
    await waitFor('the cut', () => (cuts ? true : null), 10_000);
    assert.ok(Date.now() - up >= 1900 && Date.now() - up < 9000, `cut ${Date.now() - up} ms after link up`);
    assert.is(held.size, 0);
  } finally {
    c.close();
  }
});

test('our address missing at link-up but listed a moment later (an interface still coming up): not cut then', async () => {
  let now = 1_000_000;
  let list = new Set<string>(['10.9.9.9']);
  const held = new HeldAcrossLinkDown<string>(() => now, () => list);
  const c = await connected();
  try {
    let cuts = 0;
    held.hold('a', c.tcp, () => void cuts++);
    now += 30_000;
    held.linkUp();
    list = new Set(['127.0.0.1']);
    const since = Date.now();
    await waitFor('4 s', () => (Date.now() - since >= 4000 ? true : null), 10_000);
    assert.is(cuts, 0, 'a live connection was cut');
    held.release('a');
  } finally {
    c.close();
  }
});

test('link up with our address still there: cut only after the outage + 5 s; a reply (release) before that keeps it', async () => {
  let now = 1_000_000;
  const held = new HeldAcrossLinkDown<string>(() => now, () => new Set(['127.0.0.1']));
  const a = await connected();
  const b = await connected();
  try {
    const cut: string[] = [];
    held.hold('a', a.tcp, () => void cut.push('a'));
    held.hold('b', b.tcp, () => void cut.push('b'));
    now += 100; // a 0.1 s outage: the resent reply is due within ~5.1 s
    const up = Date.now();
    held.linkUp();
    assert.equal(cut, [], 'cut at link-up with the address still present');
    held.release('b'); // b's reply came
    await waitFor('a cut', () => (cut.length ? cut : null), 15_000);
    assert.equal(cut, ['a']);
    assert.ok(Date.now() - up >= 5_000, `cut ${Date.now() - up} ms after link up`);
    assert.is(held.size, 0);
  } finally {
    a.close();
    b.close();
  }
});

test('down again before the resent reply: the timer is off until the next link-up', async () => {
  let now = 1_000_000;
  const held = new HeldAcrossLinkDown<string>(() => now, () => new Set(['127.0.0.1']));
  const c = await connected();
  try {
    let cuts = 0;
    held.hold('a', c.tcp, () => void cuts++);
    now += 100;
    held.linkUp();
    held.linkDown();
    // Longer than the armed 5.1 s: still held, because the link went down again.
    const since = Date.now();
    await waitFor('6 s', () => (Date.now() - since >= 6_000 ? true : null), 10_000);
    assert.is(cuts, 0);
    held.release('a');
  } finally {
    c.close();
  }
});

test('a flapping link (down 110 s, up 1 s, down 1 s, up): the wait counts from the first link-down, not the last', async () => {
  let now = 1_000_000;
  const held = new HeldAcrossLinkDown<string>(() => now, () => new Set(['127.0.0.1']));
  const c = await connected();
  try {
    let cuts = 0;
    held.linkDown();
    held.hold('a', c.tcp, () => void cuts++);
    now += 110_000;
    held.linkUp();
    now += 1_000; // too short for the server's backed-off resend to come
    held.linkDown();
    now += 1_000;
    held.linkUp(); // the last outage alone would give 1 + 5 s; the server resends ~110 s on
    const since = Date.now();
    await waitFor('7 s', () => (Date.now() - since >= 7_000 ? true : null), 12_000);
    assert.is(cuts, 0, 'cut before the resent reply could come: a duplicate of our making');
    held.release('a');
  } finally {
    c.close();
  }
});

test.run();
