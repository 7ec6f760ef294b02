// SMTP AUTH (RFC 4954), PLAIN and LOGIN only: both send the password itself, so they are only
// offered and accepted inside TLS — or in clear on a loopback listener when the config says so.

import { plainAddress } from '../config/cidr.js';
import { log } from '../log/log.js';
import { verifyPassword } from '../local/passwords.js';
import { replies } from './replies.js';
import type { UsersStore } from './users-file.js';
import type { AuthAttempt, WireSession } from './wire/types.js';

/** A failed login waits this long: it slows guessing without holding a slot for long. */
const FAILURE_DELAY_MS = 1000;

export function isLoopbackHost(host: string): boolean {
  return /^127\./.test(host) || host === '::1' || host === 'localhost';
}

/** May AUTH be used on a connection that is not (yet) encrypted? */
export function clearAuthAllowed(listenHost: string, allowOnLocalhost: boolean): boolean {
  return allowOnLocalhost && isLoopbackHost(listenHost);
}

/** The engine's onAuth: checks the password against the users file; never logs it. */
export function createAuthHandler(users: UsersStore): (auth: AuthAttempt, session: WireSession) => Promise<string> {
  return async (auth, session) => {
    const user = auth.username;
    const client = plainAddress(session.remoteAddress);
    let ok: boolean;
    try {
      const hash = users.hashOf(user);
      // Hash even for unknown users, so the answer takes as long either way.
      ok = (await verifyPassword(auth.password, hash ?? 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=')) && hash !== undefined;
    } catch (err) {
      log.error(null, 'auth error', { user, client, error: (err as Error).message });
      throw replies.authUnavailable();
    }
    if (ok) {
      log.info(null, 'auth ok', { user, method: auth.method, client });
      return user;
    }
    log.info(null, 'auth failed', { user, method: auth.method, client });
    await new Promise((r) => setTimeout(r, FAILURE_DELAY_MS));
    throw replies.authFailed();
  };
}
