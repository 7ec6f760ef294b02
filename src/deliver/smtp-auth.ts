// Logging in to the next hop: AUTH PLAIN/LOGIN with a password from a 0600 file, or OAuth2
// (XOAUTH2 / OAUTHBEARER) with an access token refreshed from a refresh token. The password file
// is looked at on every login (config/secret-file.ts): a corrected file works without SIGHUP.

import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { currentSecret, describeRead, lastRead } from '../config/secret-file.js';
import type { SmtpAuthSpec } from '../routes/profile.js';

export async function authenticate(conn: SMTPConnection, auth: SmtpAuthSpec): Promise<void> {
  if (auth.kind === 'password') {
    const pass = currentSecret(auth.passwordFile, auth.password).value;
    await new Promise<void>((resolve, reject) => conn.login({ user: auth.user, pass }, (err) => (err ? reject(err) : resolve())));
    return;
  }
  const { oauth2Login } = await import('./oauth2.js');
  await oauth2Login(conn, auth);
}

export function describeAuthFailure(auth: SmtpAuthSpec, where: string, err: { message: string; response?: string }): string {
  const reply = err.response ?? err.message;
  if (auth.kind === 'password') {
    // Which copy of the password was refused: a file fixed since then is used at the next try.
    return `authentication as ${auth.user} failed at ${where}: ${reply} (password from ${describeRead(lastRead(auth.passwordFile))}; check it)`;
  }
  return `OAuth2 (${auth.mechanism}) authentication as ${auth.user} failed at ${where}: ${reply}`;
}
