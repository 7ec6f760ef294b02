// trusted_networks lookups (config/cidr.ts): answers are remembered per list, and must stay the
// same answers as the plain lookup, also for IPv4-mapped addresses and past the cache's size.

import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NetworkList } from '../../src/config/cidr.js';

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

test.run();
