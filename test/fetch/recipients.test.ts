// Recipients of a fetched message from its headers (multidrop): address extraction from
// real-world header values, the domain filter, header order, folding, and the fallback.
// (pop3.test.ts and e2e/fetch.test.ts run the same rules on mail fetched from Dovecot.)

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { addresses, envelopeFor } from '../../src/fetch/recipients.js';

const acct = { deliverTo: ['postmaster'], recipientsFrom: ['Delivered-To', 'X-Original-To', 'To'], recipientsDomains: ['example.org', 'b.example'] };
const lines = (h: string) => h.split('\r\n').map((l) => Buffer.from(l));

test('addresses: display names, comments, groups and angle brackets do not confuse it', () => {
  assert.equal(addresses('"Smith, J <js@evil.example>" <john@example.org>'), ['john@example.org']);
  assert.equal(addresses('ann@example.org (Ann <a@evil.example>), <bo.b+tag@b.example>'), ['ann@example.org', 'bo.b+tag@b.example']);
  assert.equal(addresses('friends: carl@example.org, dora@example.org;'), ['carl@example.org', 'dora@example.org']);
  assert.equal(addresses('undisclosed-recipients:;'), []);
  assert.equal(addresses('"quoted \\" @ sign" <q@example.org>'), ['q@example.org']);
});

test('the first header with an address in a local domain wins; case kept, duplicates dropped', () => {
  const env = envelopeFor(acct, lines('Received: from x\r\nTo: team@example.org\r\nDelivered-To: box@isp.example\r\nX-Original-To: Eve@EXAMPLE.org\r\nX-Original-To: eve@example.org, fred@b.example\r\n\r\nDelivered-To: body@example.org'));
  assert.equal(env, { recipients: ['Eve', 'fred'], from: 'X-Original-To' });
});

test('folded header fields are read whole; header names match case-insensitively', () => {
  const env = envelopeFor(acct, lines('delivered-to:\r\n  gina@example.org'));
  assert.equal(env, { recipients: ['gina'], from: 'Delivered-To' });
});

test('nothing in a local domain, or no recipients_from: deliver_to', () => {
  assert.equal(envelopeFor(acct, lines('To: someone@elsewhere.example\r\nDelivered-To: x@example.org.evil.example')), { recipients: ['postmaster'] });
  assert.equal(envelopeFor({ ...acct, recipientsFrom: [] }, lines('Delivered-To: h@example.org')), { recipients: ['postmaster'] });
});

test('a header naming a path or a command in a local domain gives no recipient (never a file)', () => {
  const env = envelopeFor(acct, lines('Delivered-To: /tmp/x@example.org, |touch@example.org, ok@example.org'));
  assert.equal(env, { recipients: ['ok'], from: 'Delivered-To' });
  assert.equal(envelopeFor(acct, lines('Delivered-To: /var/mail/root@example.org')), { recipients: ['postmaster'] });
});

test('at most 100 recipients from one message', () => {
  const many = Array.from({ length: 150 }, (_, i) => `u${i}@example.org`).join(', ');
  assert.equal(envelopeFor(acct, lines(`To: ${many}`)).recipients.length, 100);
});

test.run();
