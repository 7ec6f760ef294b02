// One transport per route, chosen by the route's kind. The transports themselves (SMTP client,
// pool, dial, MX lookup, tunnels, pipe: ~30 modules) load when the route first delivers, not
// at start: an idle daemon, or one whose routes never send, does not hold them (issue 17).

import { domainOf } from '../message/address.js';
import type { RouteProfile } from '../routes/profile.js';
import type { SelfCheck } from './mx.js';
import { sameForAll, type DeliveryJob, type DeliveryResult, type Transport } from './transport.js';

/** @param self tells an MX that is this machine (mail must not loop back to us). */
export function createTransport(route: RouteProfile, hostname: string, self?: SelfCheck): Transport {
  if (route.kind === 'local-only') {
    return {
      name: route.name,
      deliver: async (job) => sameForAll(job, { outcome: 'hold', message: `route ${route.name} is local-only` }),
      close: async () => undefined,
    };
  }
  return new LazyTransport(route.name, async () => (await import('./transports.js')).buildTransport(route, hostname, self));
}

/**
 * Builds the real transport at the first deliver(), then delegates. A link-down while a delivery
 * waits for the import ends that delivery "interrupted" before it reaches the transport (which
 * would take its own, fresh abort signal and dial); once built, interrupt() goes straight through.
 */
export class LazyTransport implements Transport {
  private inner: Transport | undefined;
  private loading: Promise<Transport> | undefined;
  /** For deliveries waiting for the import; replaced at each interrupt(), as in SmtpTransport. */
  private abort = new AbortController();

  constructor(
    readonly name: string,
    private readonly build: () => Promise<Transport>,
  ) {}

  async deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    if (this.inner) return this.inner.deliver(job);
    const signal = this.abort.signal;
    const t = await this.load();
    if (signal.aborted) {
      const why = signal.reason instanceof Error ? signal.reason.message : 'link down';
      return sameForAll(job, { outcome: 'interrupted', message: `interrupted: ${why} (loading the transport)` });
    }
    return t.deliver(job);
  }

  interrupt(why: string): void {
    if (this.inner) return this.inner.interrupt?.(why);
    const old = this.abort;
    this.abort = new AbortController();
    old.abort(new Error(why));
  }

  resume(): void {
    this.inner?.resume?.();
  }

  stopWaiting(): void {
    this.inner?.stopWaiting?.();
  }

  async close(): Promise<void> {
    const t = this.inner ?? (await this.loading?.catch(() => undefined));
    await t?.close();
  }

  private load(): Promise<Transport> {
    // A failed import or build is not kept: the next delivery tries again (the runner records
    // this one as a temporary failure).
    this.loading ??= this.build().then(
      (t) => {
        this.inner = t;
        return t;
      },
      (err) => {
        this.loading = undefined;
        throw err;
      },
    );
    return this.loading;
  }
}

/** Jobs carry recipients that share a message and a route — and, for MX, a domain. */
export function jobKey(route: RouteProfile, msgid: string, recipient: string): string {
  return route.kind === 'mx' ? `${msgid}/${route.name}/${domainOf(recipient)}` : `${msgid}/${route.name}`;
}
