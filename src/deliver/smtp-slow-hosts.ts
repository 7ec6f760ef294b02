// Hosts that answer slowly every time (a greet pause, slow recipient checks), learned so the
// stall hedge (smtp-deadline.ts StallHedge) leaves them alone instead of cutting each of their
// sessions: a silence of stall_timeout or more in an unhedged round that then got its reply.
// In memory, per host name and port; forgotten after SLOW_HOST_MS or a restart.
// And the other way round (ReplyPace): a route whose servers answer within milliseconds gets a
// shorter stall limit than stall_timeout, so a lost greeting in a 5 s up-window is caught in time.

import { log } from '../log/log.js';
import type { SmtpHop } from './smtp.js';
import type { PooledConnection } from './smtp-pool.js';

const SLOW_HOST_MS = 15 * 60_000;

export class SlowHosts {
  private readonly until = new Map<string, number>();
  /** Hosts silent once on a route that usually answers at once: slow only if it happens again. */
  private readonly suspects = new Map<string, number>();

  constructor(private readonly route: string) {}

  has(hop: SmtpHop): boolean {
    const key = hostKey(hop);
    const until = this.until.get(key);
    if (until === undefined) return false;
    if (until > Date.now()) return true;
    this.until.delete(key);
    return false;
  }

  /**
   * After an unhedged round on `pc`: remembers its host when it was silent for stallMs or more.
   * On a route that usually answers within ms (`usuallyFast`, ReplyPace) one such silence is
   * more likely a reply lost twice on a lossy link than a slow server — taken for slowness, it
   * would switch the hedge off for the whole route for 15 min (the link-flap bench saw exactly
   * that) — so there it takes a second one within SLOW_HOST_MS, with no quick round between.
   */
  learn(pc: PooledConnection, stallMs: number, usuallyFast: boolean): void {
    if (!stallMs) return;
    const key = hostKey(pc.hop);
    const silence = pc.deadlines.longestSilenceMs;
    const now = Date.now();
    if (silence < stallMs) {
      this.suspects.delete(key);
      return;
    }
    const seconds = `${(silence / 1000).toFixed(1)}s`;
    if (usuallyFast && !((this.suspects.get(key) ?? 0) > now)) {
      this.suspects.set(key, now + SLOW_HOST_MS);
      log.info(null, 'next hop was silent for long once; taken for loss on the link, not a slow server', { route: this.route, hop: pc.hop.label, silence: seconds });
      return;
    }
    this.suspects.delete(key);
    if (!this.has(pc.hop)) log.info(null, 'next hop answers slowly: stall_timeout not applied to it for 15 min', { route: this.route, hop: pc.hop.label, silence: seconds });
    this.until.set(key, now + SLOW_HOST_MS);
  }
}

/** A host by its name, not by the address open() connected to. */
function hostKey(hop: SmtpHop): string {
  return `${hop.servername || hop.host}:${hop.port}`;
}

/** Below this the stall limit never goes, whatever the pace (RTT of a slow mobile link, jitter). */
const MIN_HEDGE_MS = 1_000;
const PACE_SAMPLES = 32;
const PACE_MIN_SAMPLES = 8;

/**
 * How long the route's replies take to begin (the replies StallHedge covers), over the last
 * PACE_SAMPLES: the stall limit is 4× their 90th percentile, between MIN_HEDGE_MS and the
 * route's stall_timeout. With few samples, stall_timeout as configured.
 */
export class ReplyPace {
  private readonly samples: number[] = [];
  private next = 0;

  readonly record = (ms: number): void => {
    if (this.samples.length < PACE_SAMPLES) this.samples.push(ms);
    else this.samples[this.next] = ms;
    this.next = (this.next + 1) % PACE_SAMPLES;
  };

  hedgeMs(stallMs: number): number {
    const p90 = this.p90();
    if (!stallMs || p90 === undefined) return stallMs;
    return Math.min(stallMs, Math.max(MIN_HEDGE_MS, 4 * p90));
  }

  /** The route's replies usually begin well within stall_timeout (known from enough samples). */
  usuallyFast(stallMs: number): boolean {
    const p90 = this.p90();
    return p90 !== undefined && 4 * p90 < stallMs;
  }

  private p90(): number | undefined {
    if (this.samples.length < PACE_MIN_SAMPLES) return undefined;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.floor(sorted.length * 0.9)]!;
  }
}

