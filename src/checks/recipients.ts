// recipients: a local recipient must exist (aliases, users, virtual maps, ~/.forward) while the
// client is still connected, so an unknown user gets 550 now instead of a bounce later.
// Remote recipients are the relay check's business.

import { log } from '../log/log.js';
import { replies } from '../smtp/replies.js';
import { NEXT, refusal, type Check } from './check.js';
import type { CheckEnv } from './registry.js';

export function createCheck(env: CheckEnv): Check {
  env.options.rejectUnknown();
  return {
    name: 'recipients',
    phases: ['rcpt'],
    async run(_phase, ctx) {
      const rcpt = ctx.recipient!;
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
