// When to try again: exponential backoff from retry_min doubling up to retry_max, expiry after
// max_lifetime, and a one-time delay warning after delay_warning. Lifetime and warning count
// from the first real attempt, not from arrival: time spent waiting for a link to come up is
// normal here and must never turn into a bounce.

import type { QueueConfig } from '../config/schema.js';

export function retryDelay(q: QueueConfig, attempts: number): number {
  const exp = Math.min(attempts - 1, 30);
  return Math.min(q.retryMinMs * 2 ** Math.max(0, exp), q.retryMaxMs);
}

export function isExpired(q: QueueConfig, firstAttempt: number, now: number): boolean {
  return now - firstAttempt >= q.maxLifetimeMs;
}

export function needsDelayWarning(q: QueueConfig, firstAttempt: number, now: number, warned: boolean, sender: string): boolean {
  return !warned && sender !== '' && q.delayWarningMs > 0 && now - firstAttempt >= q.delayWarningMs && q.delayWarningMs < q.maxLifetimeMs;
}
