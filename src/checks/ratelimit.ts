// Rate limits per client address, per authenticated user and per sender domain, over a sliding
// window: `per_ip = "100/1h"` allows 100 messages in any 60 minutes.
//
// What is counted: messages, at end of DATA (`count = "recipients"` counts each recipient of a
// message instead). Counting there, not at RCPT, means a refused or abandoned transaction costs
// the client nothing. At RCPT the check only refuses — without counting — when a limit is already
// used up, so a client over its limit is told before it sends the data. It must be listed at
// `data`; listing it at `rcpt` too adds that early refusal.
//
// State is in memory only: a restart forgets the counts. A limit protects against a burst (a
// compromised LAN host, a leaked password), and a burst outlives a restart only if the daemon is
// restarted in a loop — a trade for never writing to disk per message on a router's flash.
//
// IPv6 clients are counted per /64: one host can use any address of its prefix.

import net from 'node:net';
import { ipv6Network64, plainAddress } from '../config/cidr.js';
import { formatDuration, parseDuration } from '../config/units.js';
import { log } from '../log/log.js';
import { domainOf } from '../message/address.js';
import type { Check, CheckContext, Phase, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';

export interface Limit {
  max: number;
  windowMs: number;
  /** "per 1h", for replies and logs. */
  text: string;
}

/** "100/1h" → 100 per hour; null when malformed. */
export function parseLimit(text: string): Limit | null {
  const m = /^\s*(\d+)\s*\/\s*(\S+)\s*$/.exec(text);
  if (!m) return null;
  const windowMs = parseDuration(/^[a-z]+$/i.test(m[2]!) ? `1${m[2]}` : m[2]);
  if (windowMs === null || windowMs <= 0) return null;
  return { max: Number(m[1]), windowMs, text: `per ${formatDuration(windowMs)}` };
}

/** Event times per key, oldest first, pruned to the window on every touch. */
export class SlidingWindow {
  private readonly events = new Map<string, number[]>();
  private sweeper: NodeJS.Timeout;

  constructor(
    readonly limit: Limit,
    private readonly now: () => number = Date.now,
  ) {
    // Keys not touched for a window are dropped, so idle clients do not pile up.
    this.sweeper = setInterval(() => this.sweep(), Math.min(limit.windowMs, 60_000));
    this.sweeper.unref();
  }

  private current(key: string): number[] {
    const list = this.events.get(key);
    if (!list) return [];
    const cutoff = this.now() - this.limit.windowMs;
    let drop = 0;
    while (drop < list.length && list[drop]! <= cutoff) drop++;
    if (drop) list.splice(0, drop);
    if (!list.length) this.events.delete(key);
    return list;
  }

  count(key: string): number {
    return this.current(key).length;
  }

  /** Milliseconds until the oldest event leaves the window (when a slot frees up). */
  retryAfter(key: string): number {
    const list = this.current(key);
    return list.length ? Math.max(0, list[0]! + this.limit.windowMs - this.now()) : 0;
  }

  /** Records `n` events if they fit; false (nothing recorded) when they would exceed the limit. */
  take(key: string, n: number): boolean {
    const list = this.current(key);
    if (list.length + n > this.limit.max) return false;
    const t = this.now();
    let stored = this.events.get(key);
    if (!stored) this.events.set(key, (stored = list));
    for (let i = 0; i < n; i++) stored.push(t);
    return true;
  }

  sweep(): void {
    for (const key of [...this.events.keys()]) this.current(key);
  }

  get size(): number {
    return this.events.size;
  }

  close(): void {
    clearInterval(this.sweeper);
  }
}

type Scope = 'ip' | 'user' | 'sender_domain';

/** The client key: the address, or its /64 for IPv6. */
export function ipKey(address: string): string {
  const a = plainAddress(address);
  return ipv6Network64(a) ?? a;
}

function keyFor(scope: Scope, ctx: CheckContext): string | null {
  switch (scope) {
    case 'ip':
      return ipKey(ctx.clientAddress);
    case 'user':
      return ctx.authUser ?? null;
    case 'sender_domain':
      return ctx.sender ? domainOf(ctx.sender) || null : null; // the null sender (bounces) has no domain
  }
}

const WHO: Record<Scope, (key: string) => string> = {
  ip: (k) => `client ${k}`,
  user: (k) => `user ${k}`,
  sender_domain: (k) => `sender domain ${k}`,
};

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const limits = new Map<Scope, Limit>();
  for (const scope of ['ip', 'user', 'sender_domain'] as Scope[]) {
    const key = `per_${scope}`;
    const text = o.string(key);
    if (text === undefined) continue;
    limits.set(scope, parseLimit(text) ?? o.fail(key, `is "${text}", which is not COUNT/DURATION`, `write e.g. ${key} = "100/1h" (at most 100 in any hour)`));
  }
  const unit = o.oneOf('count', ['messages', 'recipients'], 'messages');
  const exemptTrusted = o.bool('exempt_trusted', false);
  if (!limits.size) o.fail(undefined, 'sets no limit', 'set at least one of per_ip, per_user, per_sender_domain, e.g. per_ip = "100/1h"');
  if (!env.config.checks.phases.data.includes('ratelimit')) {
    o.fail(undefined, 'is not listed at data, where messages are counted: it would never count anything', 'add "ratelimit" to data = [...] in [checks] (and keep it at rcpt for early refusals)');
  }
  o.rejectUnknown();
  const windows = new Map([...limits].map(([scope, limit]) => [scope, new SlidingWindow(limit)]));

  const refuse = (scope: Scope, key: string, w: SlidingWindow, ctx: CheckContext): Verdict => {
    const seconds = Math.max(1, Math.ceil(w.retryAfter(key) / 1000));
    const limit = `${w.limit.max} ${w.limit.max === 1 ? unit.slice(0, -1) : unit} ${w.limit.text}`;
    log.info(ctx.queueId ?? null, 'rate limit exceeded', { scope, key, limit, client: ctx.clientAddress });
    return { action: 'tempfail', code: 450, enhanced: '4.7.1', text: `Rate limit exceeded for ${WHO[scope](key)}: at most ${limit}; try again in ${seconds} second${seconds === 1 ? '' : 's'}` };
  };

  return {
    name: 'ratelimit',
    phases: ['rcpt', 'data'],
    async run(phase: Phase, ctx: CheckContext): Promise<Verdict> {
      // Local pickup (sendmail via the maildrop) cannot be asked to retry; its mail was accepted already.
      if (ctx.listener === 'pickup' || (exemptTrusted && ctx.trusted)) return NEXT;
      const keyed = [...windows].map(([scope, w]) => ({ scope, w, key: keyFor(scope, ctx) })).filter((k): k is { scope: Scope; w: SlidingWindow; key: string } => k.key !== null);
      if (phase === 'rcpt') {
        // Would the message, with this recipient, still fit when it is counted at DATA?
        const n = unit === 'recipients' ? ctx.recipients.length + 1 : 1;
        for (const { scope, w, key } of keyed) if (w.count(key) + n > w.limit.max) return refuse(scope, key, w, ctx);
        return NEXT;
      }
      if (phase !== 'data') return NEXT;
      const n = unit === 'recipients' ? Math.max(1, ctx.recipients.length) : 1;
      // All limits must have room before any is charged: a refused message counts nowhere.
      for (const { scope, w, key } of keyed) if (w.count(key) + n > w.limit.max) return refuse(scope, key, w, ctx);
      for (const { w, key } of keyed) w.take(key, n);
      return NEXT;
    },
    async close() {
      for (const w of windows.values()) w.close();
    },
  };
}
