// Envelope address rules (src/message/address.ts): what is a mailbox, and what only looks like
// one of the aliases file's file/pipe targets.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { invisibleReason, isValidEnvelopeAddress, nonMailboxReason } from '../../src/message/address.js';

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

test('invisible characters (SMTP MAIL/RCPT rule) are refused and named; a joiner after a non-ASCII letter is not', () => {
  const cases: [string, string][] = [['a\u202eb@example.org', '202E'], ['pay\u200dpal@example.org', '200D'], ['x@exa\u00admple.org', '00AD'], ['tag\u{e0041}@example.org', 'E0041'], ['\ufeffa@example.org', 'FEFF']];
  for (const [a, cp] of cases) {
    assert.not.ok(isValidEnvelopeAddress(a), a);
    assert.is(invisibleReason(a), `it contains an invisible or control character (U+${cp})`, a);
  }
  assert.is(invisibleReason('نامه\u200cها@example.org'), null);
  assert.ok(isValidEnvelopeAddress('نامه\u200cها@example.org'));
  assert.is(invisibleReason('نامه\u200cها\u202e@example.org'), 'it contains an invisible or control character (U+202E)');
});

test.run();
