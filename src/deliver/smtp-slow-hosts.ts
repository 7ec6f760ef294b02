// Hosts that answer slowly every time (a greet pause, slow recipient checks), learned so the
// stall hedge (smtp-deadline.ts StallHedge) leaves them alone instead of cutting each of their
// sessions: a silence of stall_timeout or more in an unhedged round that then got its reply.
// In memory, per host name and port; forgotten after SLOW_HOST_MS or a restart.

import { log } from '../log/log.js';
import type { SmtpHop } from './smtp.js';
import type { PooledConnection } from './smtp-pool.js';

const SLOW_HOST_MS = 15 * 60_000;

export class SlowHosts {
  private readonly until = new Map<string, number>();

  constructor(private readonly route: string) {}

  has(hop: SmtpHop): boolean {
    const key = hostKey(hop);
    const until = this.until.get(key);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.until.delete(key);
    return false;
  }

  /** After an unhedged round on `pc`: remembers its host when it was silent for stallMs or more. */
  learn(pc: PooledConnection, stallMs: number): void {
    const silence = pc.deadlines.longestSilenceMs;
    if (!stallMs || silence < stallMs) return;
    if (!this.has(pc.hop)) log.info(null, 'next hop answers slowly: stall_timeout not applied to it for 15 min', { route: this.route, hop: pc.hop.label, silence: `${(silence / 1000).toFixed(1)}s` });
    this.until.set(hostKey(pc.hop), Date.now() + SLOW_HOST_MS);
  }
}

/** A host by its name, not by the address open() connected to. */
function hostKey(hop: SmtpHop): string {
  return `${hop.servername || hop.host}:${hop.port}`;
}
