// recipients: a local recipient must exist (aliases, users, virtual maps, ~/.forward) while the
// client is still connected, so an unknown user gets 550 now instead of a bounce later.
// Remote recipients are the relay check's business, except in [relay] domains with a
// recipients list (relay_recipient_maps): an address not on it is 550 5.1.1 here too, so a backup
// MX does not queue mail for days that its primary will refuse.

import { log } from '../log/log.js';
import { relayDomainOf } from '../relay/config.js';
import { RelayRecipients } from '../relay/recipients.js';
import { SmtpError } from '../errors.js';
import { replies } from '../smtp/replies.js';
import { NEXT, refusal, type Check } from './check.js';
import type { CheckEnv } from './registry.js';

export function createCheck(env: CheckEnv): Check {
  env.options.rejectUnknown();
  const relay = env.config.relay;
  const listed = relay.recipientsFile ? new RelayRecipients(relay.recipientsFile, relay.recipientsWhere).load() : null;
  return {
    name: 'recipients',
    phases: ['rcpt'],
    async run(_phase, ctx) {
      const rcpt = ctx.recipient!;
      if (listed && relayDomainOf(relay, rcpt)) {
        let known: boolean;
        try {
          known = listed.accepts(rcpt);
        } catch (e) {
          log.warn(null, 'relay recipients unreadable', { file: listed.file, error: (e as Error).message.split('\n')[0] });
          return refusal(replies.lookupFailed(rcpt, 'relay recipient table unavailable') as never);
        }
        if (known) return NEXT;
        log.info(null, 'recipient refused', { client: ctx.clientAddress, rcpt: `<${rcpt}>`, reason: 'not in relay recipients' });
        return refusal(new SmtpError(550, '5.1.1', `<${rcpt}>: Recipient address rejected: User unknown in relay recipient table`) as never);
      }
      if (!env.checkRecipient || !env.isLocal(rcpt)) return NEXT;
      let err: Error | null;
      try {
        err = await env.checkRecipient(rcpt);
      } catch (e) {
        err = replies.lookupFailed(rcpt, (e as Error).message);
      }
      if (!err) return NEXT;
      log.info(null, 'recipient refused', { client: ctx.clientAddress, rcpt: `<${rcpt}>`, reason: err.message });
      return refusal(err as never);
    },
  };
}
