// relay: who may send to domains that are not ours. Trusted networks and authenticated users may
// relay; everyone else may only send to our own domains (closed relay, Postfix's
// reject_unauth_destination). Always runs first at RCPT (registry.ts MANDATORY_RCPT).
//
// The address forms of the classic open-relay probes are refused by construction: the
// recipient's domain is what decides, after the last @, so `user%other@ours` and `other!user@ours`
// are local addresses (and unknown users), and `@ours:user@other` or "user@other"@ours never reach
// here as anything but their real domain.
//
// [relay] domains (backup MX, a LAN domain behind us) are accepted from anyone, like Postfix's
// relay_domains, but from untrusted clients without routing in the local part (%, !, @), as
// Postfix's allow_untrusted_routing = no: the next hop might honour it and relay for them.

import { log } from '../log/log.js';
import { relayDomainOf } from '../relay/config.js';
import { replies } from '../smtp/replies.js';
import { NEXT, refusal, type Check } from './check.js';
import type { CheckEnv } from './registry.js';

export function createCheck(env: CheckEnv): Check {
  env.options.rejectUnknown();
  return {
    name: 'relay',
    phases: ['rcpt'],
    async run(_phase, ctx) {
      const rcpt = ctx.recipient!;
      if (ctx.trusted || ctx.authUser || env.isLocal(rcpt)) return NEXT;
      if (relayDomainOf(env.config.relay, rcpt) && !/[%!@]/.test(rcpt.slice(0, rcpt.lastIndexOf('@')))) return NEXT;
      log.info(null, 'relay denied', { client: ctx.clientAddress, rcpt: `<${rcpt}>` });
      return refusal(replies.relayDenied(rcpt));
    },
  };
}
