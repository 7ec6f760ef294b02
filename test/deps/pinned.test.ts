// The libraries whose internals we hook are the exact versions the hooks were written for, and
// every hooked member exists (a test that fails the day an upgrade moves one); a mismatch stops
// the daemon with a message naming the library and the fix, never a stack trace.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import SMTPClientConnection from 'nodemailer/lib/smtp-connection/index.js';
import { LibraryMismatchError, PINNED, checkMembers, checkPinnedVersions, installedVersion } from '../../src/deps/pinned.js';
import { REPO } from '../helpers/daemon.js';

test('the installed nodemailer is the pinned version, and package.json pins them exactly', () => {
  checkPinnedVersions();
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
  for (const [lib, v] of Object.entries(PINNED)) {
    assert.is(installedVersion(lib), v);
    assert.is(pkg.dependencies[lib], v, `package.json must pin ${lib} exactly`);
  }
});

test('every member the hooks replace or call exists', () => {
  const c = new SMTPClientConnection({ host: '127.0.0.1', port: 9 });
  checkMembers('nodemailer', 'SMTPConnection', c, ['_sendCommand', '_createSendStream', '_processResponse', '_onData', '_onConnect', '_onError']);
  assert.ok(Array.isArray((c as unknown as { _responseQueue: unknown })._responseQueue), 'nodemailer keeps _responseQueue');
});

test('a missing member is a LibraryMismatchError naming the library, the member and the fix', () => {
  try {
    checkMembers('nodemailer', 'SMTPConnection', {}, ['_sendCommand']);
    assert.unreachable('should have thrown');
  } catch (err) {
    assert.instance(err, LibraryMismatchError);
    assert.match((err as Error).message, /nodemailer .*_sendCommand.*\n\s+fix: reinstall/);
  }
});

test.run();
