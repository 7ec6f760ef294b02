// What the alert monitor looks at, taken from the running daemon's parts.

import type { DeliveryRunner } from '../deliver/runner.js';
import type { FetchScheduler } from '../fetch/scheduler.js';
import type { QueuedMessage } from '../queue/store.js';
import type { AlertSources } from './monitor.js';

export function daemonAlertSources(d: {
  readonly store: { listMessages(): Promise<QueuedMessage[]>; countByRoute(): Promise<Record<string, number>> };
  readonly runner: DeliveryRunner;
  readonly fetcher: FetchScheduler | null;
}): AlertSources {
  return {
    async waiting(before) {
      // On hold is the admin's decision, not mail stuck.
      const old = (await d.store.listMessages()).filter((m) => m.created < before && m.recipients.some((r) => r.status === 'queued'));
      let oldest: QueuedMessage | null = null;
      for (const m of old) if (!oldest || m.created < oldest.created) oldest = m;
      return {
        count: old.length,
        oldest: oldest && { msgid: oldest.msgid, sender: oldest.sender, created: oldest.created, lastError: oldest.recipients.find((r) => r.lastError)?.lastError ?? null },
      };
    },
    async routes() {
      const counts = await d.store.countByRoute();
      return d.runner.getRoutes().map((r) => {
        const st = d.runner.routeState.get(r.name);
        return { name: r.name, failingSince: st?.failingSince ?? null, lastError: st?.lastError ?? null, lastErrorAt: st?.lastErrorAt ?? null, queued: counts[r.name] ?? 0 };
      });
    },
    fetches: () => (d.fetcher?.states() ?? []).map((s) => ({ account: s.account, error: s.last?.error ?? null })),
  };
}
