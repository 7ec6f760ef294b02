// The RCPT-time answer for a local address, the same wherever SMTP is spoken: the daemon's
// listeners and `sendmail -bs` / inetd `smtpd` on stdin. An unknown user is refused while the
// client waits (550 5.1.1), not accepted and bounced later.

import { LocalResolveError, type LocalResolver } from '../local/resolve.js';
import { replies } from './replies.js';

export function localRecipientCheck(resolver: Pick<LocalResolver, 'resolve'>): (address: string) => Promise<Error | null> {
  return async (address) => {
    try {
      return (await resolver.resolve(address)) ? null : replies.unknownUser(address);
    } catch (err: unknown) {
      const e = err as Error;
      return err instanceof LocalResolveError && err.permanent ? replies.aliasFailed(address, err.status, e.message) : replies.lookupFailed(address, e.message);
    }
  };
}
