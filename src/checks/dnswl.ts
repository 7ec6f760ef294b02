// DNS allow lists (list.dnswl.org and the like): a listed client is noted in the connection
// notes (`dnswl`: a fact about the client address, so per connection; read by greylist to let
// it through at once) and, when `threshold` is set and the listing zones' weights reach it,
// accepted outright for the phase — the remaining checks of that phase are skipped. Same lookup, cache and failure rules as dnsbl.

import type { Check, CheckContext, Phase, Verdict } from './check.js';
import { NEXT } from './check.js';
import { DnsLists, readDnsListOptions } from './dnsbl.js';
import type { CheckEnv } from './registry.js';
import { log } from '../log/log.js';

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const lists = new DnsLists('dnswl', readDnsListOptions(o, 'list.dnswl.org'));
  // No threshold: only note the listing; never skip other checks.
  const threshold = o.has('threshold') ? o.integer('threshold', 1, 1) : null;
  o.rejectUnknown();
  return {
    name: 'dnswl',
    phases: ['connect', 'helo', 'mail', 'rcpt'],
    async run(_phase: Phase, ctx: CheckContext): Promise<Verdict> {
      // One lookup per session: the answer does not change between RCPTs.
      let weight = ctx.connection.dnswlWeight;
      if (weight === undefined) {
        const r = await lists.lookup(ctx.clientAddress, ctx.queueId ?? null);
        weight = r.weight;
        ctx.connection.dnswlWeight = weight;
        if (r.listed.length) {
          ctx.connection.dnswl = true;
          log.info(ctx.queueId ?? null, 'dnswl: listed', { client: ctx.clientAddress, zones: r.listed.map((z) => z.zone).join(','), weight });
        }
      }
      return ctx.connection.dnswl && threshold !== null && weight >= threshold ? { action: 'accept' } : NEXT;
    },
  };
}
