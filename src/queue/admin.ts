// What the administrator, the link monitor and the schedules do to the queue, apart from
// storage (store.ts): hold, release, requeue, flush a route, remove. The delivery runner never
// needs these; the control socket and `tidemail queue` without a daemon do. The SQLite backend
// implements both interfaces in sqlite.ts; test/queue/store-contract.test.ts holds either to them.

import type { QueueStore } from './store.js';

export interface QueueAdmin {
  /** Holds the envelopes of a message or one envelope (every envelope with null); how many. */
  hold(id: string | null): Promise<number>;
  /** Makes envelopes due now and queued (releases held ones); with null every queued envelope. */
  requeue(id: string | null): Promise<number>;
  /** Makes everything for `route` due now: waiting for it, or deferred on it. */
  flushRoute(route: string): Promise<number>;
  /** Makes envelopes that wait for `route` (or for any route, with null) due now. */
  releaseWaiting(route: string | null): Promise<number>;
  /** Removes a message (by message or envelope id) with every recipient; false when there was none. */
  removeMessage(id: string): Promise<boolean>;
  /** Queued recipients per route (waiting for it, or last tried on it); '*' = no route. */
  countByRoute(): Promise<Record<string, number>>;
}

/** A backend: storage and its administration over the same messages. */
export type Queue = QueueStore & QueueAdmin;
