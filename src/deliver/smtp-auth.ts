// Logging in to the next hop: AUTH PLAIN/LOGIN with a password from a 0600 file, or OAuth2
// (XOAUTH2 / OAUTHBEARER) with an access token refreshed from a refresh token. The password file
// is looked at on every login (config/secret-file.ts): a corrected file works without SIGHUP.
//
// A refused login's reply is kept as the route's and the recipients' last error, which mailq,
// `tidemail status` and the log show to every local user. A hostile or broken server may echo
// what we sent — the AUTH PLAIN blob or LOGIN's base64 password decode to the password — so the
// reply is redacted (log/auth-echo.ts) before it is kept anywhere.

import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { currentSecret, describeRead, lastRead } from '../config/secret-file.js';
import { redactAuthReply, redactSecrets } from '../log/auth-echo.js';
import type { SmtpAuthSpec } from '../routes/profile.js';

/** On a failed login's error: what we sent that carries the secret (never enumerable: not logged with the error). */
const SENT = Symbol('secret auth payloads');

export async function authenticate(conn: SMTPConnection, auth: SmtpAuthSpec): Promise<void> {
  if (auth.kind === 'password') {
    const pass = currentSecret(auth.passwordFile, auth.password).value;
    const sent = passwordPayloads(auth.user, pass);
    await new Promise<void>((resolve, reject) => conn.login({ user: auth.user, pass }, (err) => (err ? reject(withSent(err, sent)) : resolve())));
    return;
  }
  const { oauth2Login } = await import('./oauth2.js');
  await oauth2Login(conn, auth);
}

/**
 * Every form in which nodemailer's PLAIN and LOGIN put the password on the wire (and the
 * password itself, which a server may echo decoded). CRAM-MD5's answer is a keyed hash: it
 * does not reveal the password, and the base64 rule catches its echo anyway.
 */
function passwordPayloads(user: string, pass: string): string[] {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  return [pass, b64(`\u0000${user}\u0000${pass}`), b64(`${user}\u0000${user}\u0000${pass}`), b64(pass)];
}

function withSent(err: Error, sent: string[]): Error {
  Object.defineProperty(err, SENT, { value: sent, enumerable: false });
  return err;
}

export function describeAuthFailure(auth: SmtpAuthSpec, where: string, err: { message: string; response?: string }): string {
  if (auth.kind === 'password') {
    const sent = (err as { [SENT]?: string[] })[SENT] ?? [];
    const reply = redactAuthReply(err.response ?? err.message, sent);
    // Which copy of the password was refused: a file fixed since then is used at the next try.
    const text = `authentication as ${auth.user} failed at ${where}: ${reply} (password from ${describeRead(lastRead(auth.passwordFile))}; check it)`;
    // The password never shows, whatever else holds it (a user name equal to it, say).
    return redactSecrets(text, sent.slice(0, 1));
  }
  // oauth2.ts redacted the server's replies in its message (which also names our files).
  return `OAuth2 (${auth.mechanism}) authentication as ${auth.user} failed at ${where}: ${err.response ?? err.message}`;
}
