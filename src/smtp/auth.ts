// SMTP AUTH (RFC 4954), PLAIN and LOGIN only: both send the password itself, so they are only
// offered and accepted inside TLS — or in clear on a loopback listener when the config says so.

import type { SMTPServerAuthentication, SMTPServerAuthenticationResponse, SMTPServerSession } from 'smtp-server';
import { plainAddress } from '../config/cidr.js';
import { log } from '../log/log.js';
import { verifyPassword } from '../local/passwords.js';
import { replies } from './replies.js';
import type { UsersStore } from './users-file.js';

export const AUTH_METHODS = ['PLAIN', 'LOGIN'];

/** A failed login waits this long: it slows guessing without holding a slot for long. */
const FAILURE_DELAY_MS = 1000;

export function isLoopbackHost(host: string): boolean {
  return /^127\./.test(host) || host === '::1' || host === 'localhost';
}

/** May AUTH be used on a connection that is not (yet) encrypted? */
export function clearAuthAllowed(listenHost: string, allowOnLocalhost: boolean): boolean {
  return allowOnLocalhost && isLoopbackHost(listenHost);
}

type AuthCallback = (err: Error | null | undefined, response?: SMTPServerAuthenticationResponse) => void;

/** smtp-server's onAuth: checks the password against the users file; never logs it. */
export function createAuthHandler(users: UsersStore): (auth: SMTPServerAuthentication, session: SMTPServerSession, cb: AuthCallback) => void {
  return (auth, session, cb) => {
    const user = auth.username ?? '';
    const client = plainAddress(session.remoteAddress);
    const check = async (): Promise<boolean> => {
      const hash = users.hashOf(user);
      // Hash even for unknown users, so the answer takes as long either way.
      const ok = await verifyPassword(auth.password ?? '', hash ?? 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=');
      return ok && hash !== undefined;
    };
    check().then(
      (ok) => {
        if (ok) {
          log.info(null, 'auth ok', { user, method: auth.method, client });
          return cb(null, { user });
        }
        log.info(null, 'auth failed', { user, method: auth.method, client });
        setTimeout(() => cb(replies.authFailed()), FAILURE_DELAY_MS);
      },
      (err: Error) => {
        log.error(null, 'auth error', { user, client, error: err.message });
        cb(replies.authUnavailable());
      },
    );
  };
}
