// `[checks.policy]`: asks a Postfix policy server (postgrey, postfwd, policyd-spf, …) at every
// phase the [checks] lists name it in. The wire client and the action mapping are in policy.ts.
//
//   [checks]
//   rcpt = ["policy"]
//   [checks.policy]
//   address = "127.0.0.1:10023"   # or a unix socket path: "/run/postgrey/postgrey.sock"
//   timeout = "10s"
//
// Actions we do not act on (PREPEND, HOLD, DISCARD, FILTER, …) are logged, never silently dropped.

import type { Check, Phase } from './check.js';
import { createPolicyClient, policyCheck } from './policy.js';
import type { CheckEnv } from './registry.js';
import { log } from '../log/log.js';

/** Postfix can delegate at any restriction stage; the [checks] lists pick the ones used. */
const PHASES: readonly Phase[] = ['connect', 'helo', 'mail', 'rcpt', 'data'];

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const address = o.string('address') || o.fail('address', 'is missing', 'write where the policy server listens, e.g. address = "127.0.0.1:10023" or "/run/postgrey.sock"');
  const timeoutMs = o.duration('timeout', 10_000);
  if (timeoutMs <= 0) o.fail('timeout', 'must be longer than 0', 'write e.g. timeout = "10s"');
  o.rejectUnknown();
  // The client parses the address when it is made: a bad one is a config error, not a 451 later.
  try {
    void createPolicyClient({ address, timeoutMs }).close();
  } catch (err) {
    o.fail('address', (err as Error).message, 'write host:port (e.g. "127.0.0.1:10023", "[::1]:10023") or an absolute socket path');
  }
  return policyCheck({
    address,
    timeoutMs,
    name: 'policy',
    phases: PHASES,
    onIgnored: (action, ctx) =>
      log.info(ctx.queueId ?? null, 'policy action not applied', { check: 'policy', phase: ctx.phase, client: ctx.clientAddress, action }),
  });
}
