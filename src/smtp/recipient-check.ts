// The RCPT-time answer for a local address, the same wherever SMTP is spoken: the daemon's
// listeners and `sendmail -bs` / inetd `smtpd` on stdin. An unknown user is refused while the
// client waits (550 5.1.1), not accepted and bounced later. An address that cannot be expanded
// is refused with its status only (local-refusal.ts); why is logged here, for the postmaster.

import { log } from '../log/log.js';
import { LocalResolveError, type LocalResolver } from '../local/resolve.js';
import { localRefusal } from './local-refusal.js';
import { replies } from './replies.js';

export function localRecipientCheck(resolver: Pick<LocalResolver, 'resolve'>): (address: string) => Promise<Error | null> {
  return async (address) => {
    try {
      return (await resolver.resolve(address)) ? null : replies.unknownUser(address);
    } catch (err: unknown) {
      const permanent = err instanceof LocalResolveError && err.permanent;
      const status = err instanceof LocalResolveError ? err.status : '4.3.0';
      const reason = (err as Error).message;
      log[permanent ? 'info' : 'warn'](null, 'local recipient cannot be expanded', { rcpt: `<${address}>`, status, reason });
      return localRefusal(`${status} ${reason}`, !permanent, address);
    }
  };
}
