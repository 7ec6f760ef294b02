// Redacting a login failure's reply (src/log/auth-echo.ts): what we sent goes, and base64-looking
// words; what real servers say about a refused login stays readable. The end-to-end cases (a
// smarthost or POP3 server echoing the login) are in deliver/smtp-auth, deliver/oauth2 and
// fetch/pop3-client.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { redactAuthReply, redactSecrets } from '../../src/log/auth-echo.js';

test('redactAuthReply keeps what a real refusal says: words, URLs, codes, short trace ids', () => {
  for (const r of [
    '535 5.7.8 Username and Password not accepted. Learn more at https://support.google.com/mail/?p=BadCredentials d2e1a72fcca58-7fc1ab9d0f5sm1 - gsmtp',
    '535 5.7.139 Authentication unsuccessful, the user credentials were incorrect. [SN4PR0501CA0054.namprd05.prod.outlook.com]',
    '535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6 internationalization 20260101123456789',
    '535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.',
    '535 5.7.8 Error: authentication failed: UnknownUserOrBadPassword',
    '454 4.7.0 TemporaryAuthFailure: backend unreachable',
  ]) assert.is(redactAuthReply(r, []), r);
  // Mixed case with a digit, or two capitals running: an encoding, not words.
  assert.is(redactAuthReply('535 AbcdEfgh1jklMnop', []), '535 [redacted]');
  assert.is(redactAuthReply('535 AbcDEfghIjklMnopQ', []), '535 [redacted]');
  assert.is(redactAuthReply('535 no: AGFsaWNlAHNlY3JldA==', []), '535 no: [redacted]');
  assert.is(redactAuthReply('535 you said pw1', ['pw1']), '535 you said [redacted]');
});

test('a secret of 6+ characters goes wherever it is; a shorter one only as a word of its own', () => {
  assert.is(redactSecrets('sent:hunter2x and hunter2', ['hunter2']), 'sent:[redacted]x and [redacted]');
  assert.is(redactSecrets('-ERR bad password p (you sent p)', ['p']), '-ERR bad password [redacted] (you sent [redacted])');
  assert.is(redactSecrets('-ERR a.b+c? a.b+c?d', ['a.b+c?']), '-ERR [redacted] [redacted]d');
  assert.is(redactSecrets('no [x] y', ['[x]']), 'no [redacted] y');
  assert.is(redactSecrets('pw-1 pw-12', ['pw-1']), '[redacted] pw-12');
});

test('a secret is also found URL-encoded (a form echoed) and with JSON-escaped slashes; other text stays', () => {
  const rt = '1//0gAbc+def=';
  assert.is(redactSecrets('refresh_token=1%2F%2F0gAbc%2Bdef%3D&x=1', [rt]), 'refresh_token=[redacted]&x=1');
  assert.is(redactSecrets('{"t":"1\\/\\/0gAbc+def="} and 1//0gAbc+def=', [rt]), '{"t":"[redacted]"} and [redacted]');
  assert.is(redactSecrets('pass=my+secret%21 my%20secret!', ['my secret!']), 'pass=[redacted] [redacted]');
  assert.is(redactSecrets('see https://support.example/p?a=1', ['hunter22']), 'see https://support.example/p?a=1');
});

test.run();
