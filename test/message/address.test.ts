// Envelope address rules (src/message/address.ts): what is a mailbox, and what only looks like
// one of the aliases file's file/pipe targets.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isValidEnvelopeAddress, nonMailboxReason } from '../../src/message/address.js';

test('file, pipe, \\user and :include: forms are not mailboxes, quoted or not', () => {
  for (const a of ['/tmp/x@evil.example', '/tmp/x', '|cmd@host.example', '"/tmp/x"@host.example', '"\\/tmp/x"@host.example', '"\\\\root"@host.example', ':include:/etc/x@host.example', '"|cmd"@host.example']) {
    assert.ok(nonMailboxReason(a), a);
    assert.not.ok(isValidEnvelopeAddress(a), a);
  }
});

test('ordinary addresses still are', () => {
  for (const a of ['alice@example.org', 'a/b@example.org', 'a|b@example.org', '"john doe"@example.org', 'x+tag@[192.0.2.1]']) {
    assert.is(nonMailboxReason(a), null, a);
  }
  assert.ok(isValidEnvelopeAddress('a/b@example.org'));
});

test.run();
