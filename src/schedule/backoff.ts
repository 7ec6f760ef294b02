// When to try again: exponential backoff from retry_min doubling up to retry_max, expiry after
// max_lifetime, and a one-time delay warning after delay_warning.

import type { QueueConfig } from '../config/schema.js';

export function retryDelay(q: QueueConfig, attempts: number): number {
  const exp = Math.min(attempts - 1, 30);
  return Math.min(q.retryMinMs * 2 ** Math.max(0, exp), q.retryMaxMs);
}

export function isExpired(q: QueueConfig, created: number, now: number): boolean {
  return now - created >= q.maxLifetimeMs;
}

export function needsDelayWarning(q: QueueConfig, created: number, now: number, warned: boolean, sender: string): boolean {
  return !warned && sender !== '' && q.delayWarningMs > 0 && now - created >= q.delayWarningMs && q.delayWarningMs < q.maxLifetimeMs;
}
