// trusted_networks lookups (config/cidr.ts): answers are remembered per list, and must stay the
// same answers as the plain lookup, also for IPv4-mapped addresses and past the cache's size.

import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NetworkList, isIPv4Text, isIPv6Text, parseCidr } from '../../src/config/cidr.js';

test('contains: the same answer on every ask, IPv4-mapped like plain, non-addresses never', () => {
  const list = new NetworkList(['127.0.0.0/8', '192.168.1.0/24', '2001:db8::/32']);
  for (let round = 0; round < 3; round++) {
    assert.is(list.contains('127.0.0.1'), true);
    assert.is(list.contains('::ffff:127.0.0.1'), true);
    assert.is(list.contains('192.168.2.1'), false);
    assert.is(list.contains('::ffff:192.168.1.7'), true);
    assert.is(list.contains('2001:db8::1'), true);
    assert.is(list.contains('2001:db9::1'), false);
    assert.is(list.contains('not an address'), false);
  }
});

test('contains: past the remembered answers (1000 distinct addresses, twice) every answer is still right', () => {
  const list = new NetworkList(['10.0.0.0/9']);
  const plain = new net.BlockList();
  plain.addSubnet('10.0.0.0', 9, 'ipv4');
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 1000; i++) {
      const a = `10.${i % 256}.${Math.floor(i / 256)}.1`;
      assert.is(list.contains(a), plain.check(a, 'ipv4'), a);
    }
  }
});

test('isIPv4Text answers as net.isIPv4: every string up to 6 characters of 0 1 2 5 9 . and whole dotted quads', () => {
  const same = (s: string) => {
    if (isIPv4Text(s) !== net.isIPv4(s)) assert.unreachable(`${JSON.stringify(s)}: net.isIPv4 says ${net.isIPv4(s)}`);
  };
  const walk = (s: string, depth: number): void => {
    same(s);
    if (depth) for (const c of ['0', '1', '2', '5', '9', '.']) walk(s + c, depth - 1);
  };
  walk('', 6);
  for (const octet of ['0', '00', '01', '9', '10', '99', '100', '199', '200', '249', '250', '255', '256', '300', '1000', ' 1', 'a']) {
    same(`${octet}.1.2.3`);
    same(`1.2.3.${octet}`);
    same(`10.${octet}.${octet}.1`);
  }
  for (const s of ['1.2.3', '1.2.3.4.5', '1.2.3.4 ', '::ffff:1.2.3.4', '1..2.3', '']) same(s);
});

test('isIPv6Text answers as net.isIPv6: every string up to 7 characters of 0 f : . % 1, and mutated addresses', () => {
  let seen = 0;
  const same = (s: string) => {
    seen++;
    if (isIPv6Text(s) !== net.isIPv6(s)) assert.unreachable(`${JSON.stringify(s)}: net.isIPv6 says ${net.isIPv6(s)}`);
  };
  const walk = (s: string, depth: number): void => {
    same(s);
    if (depth) for (const c of ['0', 'f', ':', '.', '%', '1']) walk(s + c, depth - 1);
  };
  walk('', 7);
  // Every place of "::" with 0-8 groups on each side, with and without an IPv4 tail.
  for (let h = 0; h <= 8; h++) for (let t = 0; t <= 8; t++) for (const v4 of ['', '1.2.3.4', '01.2.3.4', '1.2.3.256']) {
    const head = Array<string>(h).fill('ab'), tail = [...Array<string>(t).fill('FFFF'), ...(v4 ? [v4] : [])];
    same(`${head.join(':')}::${tail.join(':')}`);
    same([...head, ...tail].join(':'));
    same([...head, ...tail].join(':') + '%eth0.1');
  }
  let x = 7;
  const rnd = () => (x = (x * 1103515245 + 12345) % 2147483648) / 2147483648;
  const parts = ['0', '1', 'ab', 'ffff', 'FfFf', '12345', '', 'g1', '1.2.3.4', '0.0.0.0', '10.0.0.256'];
  for (let i = 0; i < 50_000; i++) {
    let s = Array.from({ length: Math.floor(rnd() * 10) }, () => parts[Math.floor(rnd() * parts.length)]).join(':');
    const at = Math.floor(rnd() * (s.length + 1));
    s = s.slice(0, at) + [':', '::', ':::', '.', ''][Math.floor(rnd() * 5)] + s.slice(at);
    if (rnd() < 0.2) s += ['%eth0', '%', '%a.b-c:d', '%x y', '%%'][Math.floor(rnd() * 5)];
    same(s);
  }
  assert.ok(seen > 300_000);
  assert.equal(parseCidr('::1/128'), { address: '::1', prefix: 128, family: 'ipv6' });
  assert.equal(parseCidr('fe80::1%eth0'), { address: 'fe80::1%eth0', prefix: 128, family: 'ipv6' });
  assert.is(parseCidr('1::2::3/64'), null);
});

test.run();
