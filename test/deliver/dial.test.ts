// dial(): Happy Eyeballs over real sockets — a black-holed IPv6 address (netns + nftables, root
// only) beside a working IPv4 one, refused and silent addresses, the connect timeout, abort,
// and TCP keepalive on the winner as the kernel reports it (ss).

import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dial, DialError, orderAddresses } from '../../src/deliver/dial.js';
import { createIpv6BlackHole, type BlackHole } from '../helpers/blackhole.js';
import { freePort, waitFor } from '../helpers/ports.js';

let hole: BlackHole | null = null;
const servers: net.Server[] = [];
const sockets: net.Socket[] = [];

test.before(() => {
  hole = createIpv6BlackHole('dl', 231);
});
test.after(() => hole?.teardown());
test.after.each(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

/** A TCP listener on 127.0.0.1 that counts connections and keeps them open. */
async function listener(): Promise<{ port: number; accepted: net.Socket[] }> {
  const accepted: net.Socket[] = [];
  const s = net.createServer((c) => {
    accepted.push(c);
    sockets.push(c);
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return { port: (s.address() as net.AddressInfo).port, accepted };
}

function keep(s: net.Socket): net.Socket {
  sockets.push(s);
  return s;
}

/** SYN_SENT sockets of ours towards `address` (the losers of a race must not linger). */
function synSentTo(address: string): number {
  const out = execFileSync('ss', ['-tnH', 'state', 'syn-sent', 'dst', `[${address}]`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim()).length;
}

test('addresses are ordered IPv6 first, families interleaved, order within a family kept', () => {
  assert.equal(orderAddresses(['192.0.2.1', '192.0.2.2', '2001:db8::1', '2001:db8::2', '192.0.2.3']),
    ['2001:db8::1', '192.0.2.1', '2001:db8::2', '192.0.2.2', '192.0.2.3']);
  assert.equal(orderAddresses(['192.0.2.1', '192.0.2.1']), ['192.0.2.1']);
});

test('broken IPv6 (SYNs black-holed) beside working IPv4: connected via IPv4 in well under a second', async () => {
  if (!hole) return console.log('  (skipped: needs root, ip and nft for the black-holed IPv6 address)');
  const { port, accepted } = await listener();
  const t0 = Date.now();
  // A name that resolves to both, the way a laptop on a network with broken IPv6 sees its smarthost.
  const s = keep(await dial({ host: 'relay.test', port, connectTimeoutMs: 10_000, resolver: async () => ['127.0.0.1', hole!.address] }));
  const ms = Date.now() - t0;
  assert.equal(s.remoteAddress, '127.0.0.1');
  assert.ok(ms < 1000, `took ${ms} ms`);
  assert.ok(ms >= 200, `IPv6 was not tried first (${ms} ms)`);
  await waitFor('the server to see the connection', () => accepted.length === 1);
  // The IPv6 attempt that lost the race is gone, not left to time out in the background.
  await waitFor('the IPv6 attempt to be destroyed', () => synSentTo(hole!.address) === 0, 2000);
});

test('an IPv6 attempt that does not answer is raced, not waited out: connected via IPv4 while it hangs', async () => {
  if (!hole) return console.log('  (skipped: needs root, ip and nft)');
  const { port } = await listener();
  const t0 = Date.now();
  const s = keep(await dial({ host: 'x', port, addresses: [hole.address, '127.0.0.1'], connectTimeoutMs: 60_000, attemptDelayMs: 50 }));
  assert.equal(s.remoteAddress, '127.0.0.1');
  assert.ok(Date.now() - t0 < 500, `took ${Date.now() - t0} ms`);
});

test('every address failing gives one error naming each address and why, code ECONNECTION', async () => {
  const closed = await freePort();
  const addresses = ['127.0.0.1'];
  if (hole) addresses.unshift(hole.address);
  const t0 = Date.now();
  const err = await dial({ host: 'relay.test', port: closed, addresses, connectTimeoutMs: 700 }).then(
    (s) => (keep(s), assert.unreachable('connected')),
    (e: unknown) => e as DialError,
  );
  assert.instance(err, DialError);
  assert.equal(err!.code, 'ECONNECTION');
  assert.match(err!.message, new RegExp(`^cannot connect to relay\\.test:${closed}: `));
  assert.match(err!.message, /127\.0\.0\.1 connection refused \(ECONNREFUSED\)/);
  if (hole) {
    assert.match(err!.message, new RegExp(`${hole.address.replace(/[.:]/g, '\\$&')} timed out after 0\\.7 s`));
    // Bounded by connect_timeout, not by the kernel's SYN retries (over a minute).
    assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  }
});

test('a name that does not resolve says so', async () => {
  const err = await dial({ host: 'nosuch.invalid', port: 25, connectTimeoutMs: 5000, resolver: async () => { throw Object.assign(new Error('x'), { code: 'ENOTFOUND' }); } })
    .then(() => null, (e: DialError) => e);
  assert.match(err!.message, /^cannot connect to nosuch\.invalid:25: nosuch\.invalid does not resolve \(ENOTFOUND\)$/);
});

test('abort destroys every attempt at once', async () => {
  if (!hole) return console.log('  (skipped: needs root, ip and nft)');
  const ac = new AbortController();
  const t0 = Date.now();
  const p = dial({ host: 'x', port: 25, addresses: [hole.address], connectTimeoutMs: 60_000, signal: ac.signal });
  await waitFor('the attempt to be under way', () => synSentTo(hole!.address) === 1, 2000, 10);
  ac.abort();
  const err = await p.then(() => null, (e: DialError) => e);
  assert.match(err!.message, /aborted/);
  assert.ok(Date.now() - t0 < 1000);
  await waitFor('the socket to be gone', () => synSentTo(hole!.address) === 0, 2000);
});

test('a SYN left unanswered gets fresh attempts to the same address (0.5 s apart, two at most), all destroyed on abort', async () => {
  if (!hole) return console.log('  (skipped: needs root, ip and nft)');
  const ac = new AbortController();
  const p = dial({ host: 'x', port: 25, addresses: [hole.address], connectTimeoutMs: 60_000, signal: ac.signal });
  const t0 = Date.now();
  await waitFor('a second attempt', () => synSentTo(hole!.address) === 2, 3000, 10);
  assert.ok(Date.now() - t0 >= 400, 'the second attempt came before the repeat delay');
  await waitFor('a third attempt', () => synSentTo(hole!.address) === 3, 3000, 10);
  // The kernel's own SYN retransmissions do not show as sockets: three is the most.
  const more = await waitFor('a fourth attempt', () => synSentTo(hole!.address) > 3 || null, 1500, 50).catch(() => false);
  assert.is(more, false, 'more than two repeated attempts');
  ac.abort();
  await p.catch(() => undefined);
  await waitFor('every attempt to be gone', () => synSentTo(hole!.address) === 0, 2000);
});

test('the winner has TCP keepalive on (ss shows its keepalive timer)', async () => {
  try {
    execFileSync('ss', ['-V'], { stdio: 'pipe' });
  } catch {
    return console.log('  (skipped: ss not installed)');
  }
  const { port } = await listener();
  const s = keep(await dial({ host: '127.0.0.1', port, connectTimeoutMs: 5000, keepAliveMs: 7000 }));
  const line = execFileSync('ss', ['-tnoH', 'state', 'established', 'sport', `= :${s.localPort}`], { encoding: 'utf8' });
  // "timer:(keepalive,6.996ms,0)": the idle time we asked for, counting down. (This ss prints
  // the seconds with an "ms" unit; older ones print "sec". The number is what tells 7 s from 30 s.)
  const m = /timer:\(keepalive,([\d.]+)/.exec(line);
  assert.ok(m, `no keepalive timer in: ${line}`);
  const secs = Number(m![1]);
  assert.ok(secs > 5 && secs <= 7, `keepalive timer at ${m![1]}, not the 7 s asked for`);
});

/** A loopback address made unreachable by a /32 route in the local table (root only); null if not possible. */
function unreachableLoopback(address = randomLoopback()): { address: string; lift(): void } | null {
  if (process.getuid?.() !== 0) return null;
  const route = ['route', 'add', 'unreachable', `${address}/32`, 'table', 'local'];
  try {
    execFileSync('ip', route, { stdio: 'pipe' });
  } catch {
    return null;
  }
  let lifted = false;
  return {
    address,
    lift() {
      if (lifted) return;
      lifted = true;
      execFileSync('ip', ['route', 'del', 'unreachable', `${address}/32`, 'table', 'local'], { stdio: 'pipe' });
    },
  };
}

function randomLoopback(): string {
  return `127.88.${process.pid % 250}.${1 + Math.floor(Math.random() * 250)}`;
}

test('a link that routes only a moment after it came up: "unreachable" is dialled again, connected once it routes', async () => {
  if (process.getuid?.() !== 0) return console.log('  (skipped: needs root and ip)');
  // Listening first: the address stops being local once the unreachable route covers it.
  const address = randomLoopback();
  const s = net.createServer((c) => sockets.push(c));
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, address, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  const u = unreachableLoopback(address);
  if (!u) return console.log('  (skipped: ip route failed)');
  try {
    // The first attempts fail at once with EHOSTUNREACH; the route goes away 400 ms in.
    const lifter = setTimeout(() => u.lift(), 400);
    const started = Date.now();
    const sock = keep(await dial({ host: u.address, port, connectTimeoutMs: 10_000 }));
    clearTimeout(lifter);
    assert.ok(Date.now() - started >= 300, 'connected before the route was lifted?');
    assert.is(sock.remoteAddress, u.address);
  } finally {
    u.lift();
  }
});

test('a host that stays unreachable still fails within seconds, not at the connect timeout', async () => {
  const u = unreachableLoopback();
  if (!u) return console.log('  (skipped: needs root and ip)');
  try {
    const started = Date.now();
    let err: DialError | undefined;
    await dial({ host: u.address, port: 25, connectTimeoutMs: 30_000 }).catch((e: DialError) => (err = e));
    const took = Date.now() - started;
    assert.ok(err instanceof DialError, 'dial did not fail');
    assert.match(err!.message, /host unreachable \(EHOSTUNREACH\)/);
    assert.ok(took >= 1000 && took < 10_000, `failed after ${took} ms`);
  } finally {
    u.lift();
  }
});

test.run();
