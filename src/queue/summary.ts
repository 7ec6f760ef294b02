// Counts for `status`: what is queued, held, and waiting for which reason.

import type { QueuedMessage } from './store.js';

export interface QueueSummary {
  messages: number;
  recipients: number;
  held: number;
  bytes: number;
  oldest: number | null;
  reasons: Record<string, number>;
}

export function queueSummary(messages: readonly QueuedMessage[]): QueueSummary {
  const s: QueueSummary = { messages: messages.length, recipients: 0, held: 0, bytes: 0, oldest: null, reasons: {} };
  for (const m of messages) {
    s.bytes += m.size;
    s.oldest = s.oldest === null ? m.created : Math.min(s.oldest, m.created);
    for (const r of m.recipients) {
      s.recipients++;
      if (r.status === 'hold') s.held++;
      const reason = r.status === 'hold' ? 'on hold' : r.lastError ?? 'not tried yet';
      s.reasons[reason] = (s.reasons[reason] ?? 0) + 1;
    }
  }
  return s;
}
