// Bare local parts in address fields get our host name (Postfix append_at_myorigin); every
// other field, and every field we cannot read, stays byte for byte.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { qualifyHeaderSection } from '../../src/message/qualify-headers.js';

const q = (section: string) => qualifyHeaderSection(section, 'host.example');

test('cron\'s From, bare To and Cc entries are qualified; qualified ones stay', () => {
  assert.is(q('From: root (Cron Daemon)\r\n'), 'From: Cron Daemon <root@host.example>\r\n');
  assert.is(q('To: root\r\n'), 'To: root@host.example\r\n');
  assert.is(q('Cc: bob@remote.example,\r\n operator\r\n'), 'Cc: bob@remote.example, operator@host.example\r\n');
  assert.is(q('Sender: "Backup, nightly" <backup>\r\n'), 'Sender: "Backup, nightly" <backup@host.example>\r\n');
});

test('fields already qualified, non-address fields, groups and unreadable values are left alone', () => {
  const same = [
    'From: Alice <alice@example.org>\r\n',
    'From: =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\r\n',
    'Subject: root\r\n',
    'X-Cron-Env: <SHELL=/bin/sh>\r\n',
    'To: undisclosed-recipients:;\r\n',
    'To: friends: root, bob;\r\n',
    'Received: from root by x\r\n',
  ];
  for (const s of same) assert.is(q(s), s);
});

test('8-bit bytes and the other fields of the section survive', () => {
  const section = Buffer.from('Subject: Grüße\r\nFrom: root\r\nX-Other: a\r\n\tb\r\n', 'utf8').toString('latin1');
  const out = Buffer.from(q(section), 'latin1').toString('utf8');
  assert.is(out, 'Subject: Grüße\r\nFrom: root@host.example\r\nX-Other: a\r\n\tb\r\n');
});

test.run();
