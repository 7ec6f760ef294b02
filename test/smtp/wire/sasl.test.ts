// AUTH PLAIN / LOGIN decoding (src/smtp/wire/sasl.ts): what becomes an attempt, what is refused.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { continueSasl, startSasl } from '../../../src/smtp/wire/sasl.js';

const plain = (authzid: string, authcid: string, pw: string) => Buffer.from(`${authzid}\0${authcid}\0${pw}`).toString('base64');

test('PLAIN: authcid with an empty authzid, or the user in authzid only (clients do both)', () => {
  assert.equal(startSasl('PLAIN', [plain('', 'alice', 'pw')]), { attempt: { method: 'PLAIN', username: 'alice', password: 'pw' } });
  assert.equal(startSasl('PLAIN', [plain('alice', '', 'pw')]), { attempt: { method: 'PLAIN', username: 'alice', password: 'pw' } });
  assert.equal(startSasl('PLAIN', [plain('alice', 'alice', 'pw')]), { attempt: { method: 'PLAIN', username: 'alice', password: 'pw' } });
});

test('PLAIN: an authzid other than the authcid (act as another user) is refused, not dropped', () => {
  const r = startSasl('PLAIN', [plain('admin', 'alice', 'pw')]);
  assert.ok('reply' in r, JSON.stringify(r));
  assert.match((r as { reply: string }).reply, /^535 5\.7\.8 .*authzid/);
});

test('PLAIN: malformed tokens and control characters get 501; "*" aborts', () => {
  for (const t of [Buffer.from('no nuls').toString('base64'), plain('', 'al\x1bice', 'pw')]) {
    const r = startSasl('PLAIN', [t]);
    assert.ok('reply' in r && /^501 /.test(r.reply), JSON.stringify(r));
  }
  const r = continueSasl('plain', '*');
  assert.ok('reply' in r && /^501 .*aborted/.test(r.reply));
});

test('LOGIN: user, then password', () => {
  const first = startSasl('LOGIN', [Buffer.from('bob').toString('base64')]);
  assert.equal(first, { challenge: '334 UGFzc3dvcmQ6\r\n', next: { loginPassword: 'bob' } });
  assert.equal(continueSasl({ loginPassword: 'bob' }, Buffer.from('secret').toString('base64')), { attempt: { method: 'LOGIN', username: 'bob', password: 'secret' } });
});

test.run();
