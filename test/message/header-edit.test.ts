// applyHeaderChanges (src/message/header-edit.ts): a milter's CHGHEADER on a raw header section.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyHeaderChanges } from '../../src/message/header-edit.js';

const SECTION = 'Received: from a\r\n\tby b; Wed, 25 Nov 2026\r\nSubject: one\r\nX-Tag: 1\r\nx-tag: 2\r\n folded\r\nTo: <b@x>\r\n';

test('changes the n-th occurrence (case-insensitive name), keeping its spelling and the rest byte for byte', () => {
  assert.is(applyHeaderChanges(SECTION, [{ name: 'X-TAG', index: 2, value: 'two' }]),
    'Received: from a\r\n\tby b; Wed, 25 Nov 2026\r\nSubject: one\r\nX-Tag: 1\r\nx-tag: two\r\nTo: <b@x>\r\n');
});

test('an empty value deletes the field with its continuation lines', () => {
  assert.is(applyHeaderChanges(SECTION, [{ name: 'x-tag', index: 2, value: '' }]),
    'Received: from a\r\n\tby b; Wed, 25 Nov 2026\r\nSubject: one\r\nX-Tag: 1\r\nTo: <b@x>\r\n');
});

test('a missing occurrence is added at the end with a value, ignored without one; multi-line values fold', () => {
  assert.is(applyHeaderChanges(SECTION, [{ name: 'X-Tag', index: 3, value: '' }]), SECTION);
  assert.is(applyHeaderChanges(SECTION, [{ name: 'X-Spam', index: 1, value: 'yes\nscore 9' }]), `${SECTION}X-Spam: yes\r\n\tscore 9\r\n`);
});

test('8-bit bytes (as latin1 text) pass through untouched', () => {
  const eight = 'Subject: caf\u00e9\r\nX-A: 1\r\n';
  assert.is(applyHeaderChanges(eight, [{ name: 'X-A', index: 1, value: '2' }]), 'Subject: caf\u00e9\r\nX-A: 2\r\n');
});

test.run();
