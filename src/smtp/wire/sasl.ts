// AUTH PLAIN (RFC 4616) and AUTH LOGIN: decoding what the client sends, step by step, with the
// replies smtp-server gave. Whether AUTH may be used at all, and the password check, are the
// connection's and the hook's.

import { replyLine } from './reply-writer.js';
import type { AuthAttempt } from './types.js';

const CONTROL = /[\x00-\x1f\x7f-\x9f]/;

/** What the next line of an exchange is. */
export type SaslStep = null | 'plain' | 'login-user' | { loginPassword: string };

/** A step's outcome: a challenge to send (and the step after it), an attempt to check, or a refusal. */
export type SaslResult = { challenge: string; next: SaslStep } | { attempt: AuthAttempt } | { reply: string };

const refuse = (text: string): SaslResult => ({ reply: replyLine(501, text) });

/** "AUTH PLAIN [token]" / "AUTH LOGIN [user]": `args` are the words after the method. */
export function startSasl(method: 'PLAIN' | 'LOGIN', args: string[]): SaslResult {
  if (args.length > 1) return refuse(method === 'PLAIN' ? 'Error: syntax: AUTH PLAIN token' : 'Error: syntax: AUTH LOGIN');
  if (method === 'PLAIN') return args.length ? plainToken(args[0]!) : { challenge: '334 \r\n', next: 'plain' };
  return args.length ? loginUser(args[0]!) : { challenge: '334 VXNlcm5hbWU6\r\n', next: 'login-user' };
}

/** The client's answer to a 334 challenge. */
export function continueSasl(step: Exclude<SaslStep, null>, line: string): SaslResult {
  const text = line.trim();
  if (text === '*') return refuse('Authentication aborted');
  if (step === 'plain') return plainToken(text);
  if (step === 'login-user') return loginUser(text);
  return { attempt: { method: 'LOGIN', username: step.loginPassword, password: Buffer.from(text, 'base64').toString() } };
}

function plainToken(token: string): SaslResult {
  const data = Buffer.from(token.trim(), 'base64').toString().split('\x00');
  if (data.length !== 3) return refuse('Error: invalid userdata');
  // authzid NUL authcid NUL passwd; many clients put the user in authzid and leave authcid empty.
  const [authzid = '', authcid = '', password = ''] = data;
  const username = authcid || authzid;
  if (CONTROL.test(username) || CONTROL.test(authzid)) return refuse('Error: invalid userdata');
  // Logging in as one user to act as another (RFC 4616 §2) is not offered: refused, not ignored.
  if (authzid && authcid && authzid !== authcid) return { reply: replyLine(535, '5.7.8 Authentication failed: acting as another user (authzid) is not supported') };
  return { attempt: { method: 'PLAIN', username, password } };
}

function loginUser(encoded: string): SaslResult {
  const username = Buffer.from(encoded.trim(), 'base64').toString();
  if (!username) return refuse('Error: missing username');
  if (CONTROL.test(username)) return refuse('Error: invalid userdata');
  return { challenge: '334 UGFzc3dvcmQ6\r\n', next: { loginPassword: username } };
}
