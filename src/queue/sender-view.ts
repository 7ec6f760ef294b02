// What the sender of a message may see of its history (`tidemail log` as an ordinary user,
// through the daemon's public socket): what Postfix or msmtp users see of their own mail —
// accepted, queued, and delivered, deferred or bounced for each recipient they gave, with the
// reply text of remote servers. What happened at a local recipient's end is that recipient's
// business: where their ~/.forward or an alias sends the mail (other addresses, files, pipe
// commands), their MDA, their mailbox paths. docs/DESIGN-NOTES.md "Public history: what a
// sender sees" has the rule; an admin's history (the database read directly) is not touched.

import { formatFields } from '../log/log.js';
import { recipientIndexOf } from './ids.js';
import type { MessageHistory, StoredEvent } from './events.js';

/** The events that say how delivery to a recipient went. */
const OUTCOME = /^(delivered|deferred|bounced|refused in session|dropped)/;
/** What an outcome on the local route keeps: the rest may name paths, commands or targets. */
const LOCAL_KEPT = new Set(['to', 'route', 'attempts', 'retry']);
/** A local reply that names nothing but the address the sender gave: shown as it is. */
const SAFE_LOCAL_RESULT = /^(?:550 )?5\.1\.1 <[^<>]*>: no such user here$/;

/** `key=value` fields as logged (log.ts formatFields): values with spaces are quoted, `"` and `\` escaped. */
export function parseFields(text: string): { key: string; raw: string; value: string }[] {
  const out: { key: string; raw: string; value: string }[] = [];
  const re = /([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const raw = m[2]!;
    const value = raw.startsWith('"') ? raw.slice(1, -1).replace(/\\(["\\])/g, '$1') : raw;
    out.push({ key: m[1]!, raw, value });
  }
  return out;
}

/** The value of a top-level field (never text inside another field's quoted value). */
export function fieldValue(fields: string, key: string): string | undefined {
  return parseFields(fields).find((f) => f.key === key)?.value;
}

/** The uid a local submission's `accepted` event names (pickup's `uid=N`), or null. */
export function submitterUid(accepted: string): number | null {
  const v = fieldValue(accepted, 'uid');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
}

/** "550 5.1.1" from the start of a reply: the status, without the text that follows it. */
function statusPrefix(result: string): string {
  return /^(?:[245]\d\d )?[245]\.\d{1,3}\.\d{1,3}(?= |$)/.exec(result)?.[0] ?? '';
}

/**
 * A recipient's result as its sender may read it (here, and in the DSN: queue/bounce.ts): a
 * remote hop's reply as it is; on the local route, its status code and a fixed text. `event`
 * says the verdict: `delivered…`, `deferred…`, anything else is a failure.
 */
export function resultForSender(route: string | null | undefined, event: string, result: string): string {
  return route === 'local' ? localResult(event, result) : result;
}

/** What a sender reads instead of a local delivery's own words. */
function localResult(event: string, result: string): string {
  if (SAFE_LOCAL_RESULT.test(result)) return result;
  const forwarded = /(?:^|; )forwarded to </.test(result);
  const what = event.startsWith('delivered')
    ? `delivered to the local recipient${forwarded ? ' (forwarded by the recipient)' : ''}`
    : event.startsWith('deferred')
      ? 'local delivery failed for now; retried later (the reason is for the postmaster)'
      : 'local delivery failed (the reason is for the postmaster)';
  return [statusPrefix(result), what].filter(Boolean).join(' ');
}

/** The event as the sender sees it, or null when it is none of their business. */
function senderEvent(e: StoredEvent, nrcpt: number): StoredEvent | null {
  const fields = parseFields(e.fields);
  const route = fields.find((f) => f.key === 'route')?.value;
  if (e.envId !== null) {
    // Envelopes past the ones given at submission were added by a local recipient's .forward
    // or alias (addRecipients), or are the [local] archive copy: not the sender's recipients.
    if (recipientIndexOf(e.envId) >= nrcpt) return null;
    if (route !== undefined && route !== 'local') return e; // a remote hop's reply: the sender's to see
    // Local outcomes keep their verdict; anything else about a local recipient (a refused
    // .forward target, …) is about that recipient's own setup.
    if (!OUTCOME.test(e.event)) return null;
  } else if (route !== 'local') return e;
  const kept = fields.flatMap((f) => {
    if (LOCAL_KEPT.has(f.key)) return [`${f.key}=${f.raw}`];
    return f.key === 'result' && e.envId !== null ? [formatFields({ result: localResult(e.event, f.value) }).slice(1)] : [];
  });
  return { ...e, fields: kept.join(' ') };
}

/** A queued recipient's last error as the sender sees it. */
function senderError(route: string | null, lastError: string | null): string | null {
  return lastError !== null ? resultForSender(route, 'deferred', lastError) : null;
}

export interface QueuedRecipientRow {
  envId: string;
  address: string;
  status: string;
  attempts: number;
  lastError: string | null;
  nextAttempt: number;
  route: string | null;
}

/**
 * `h` as the sender whose `accepted` event is `accepted` sees it. `rows` are the queued
 * recipients with their route (null once the message has left the queue).
 */
export function senderView(h: MessageHistory, accepted: string, rows: QueuedRecipientRow[] | null): MessageHistory {
  const n = Number(fieldValue(accepted, 'nrcpt'));
  // No count (an event from before nrcpt was logged): only message-level events are certain.
  const nrcpt = Number.isInteger(n) && n >= 0 ? n : 0;
  const events = h.events.map((e) => senderEvent(e, nrcpt)).filter((e): e is StoredEvent => e !== null);
  const queued = h.queued && rows
    ? {
        ...h.queued,
        recipients: rows
          .filter((r) => recipientIndexOf(r.envId) < nrcpt)
          .map(({ route, ...r }) => ({ ...r, lastError: senderError(route, r.lastError) })),
      }
    : h.queued;
  return { ...h, events, queued };
}

/** Whether the sender's view names `address` as an `ADDRESS` query means it (events.ts). */
export function namesAddress(h: MessageHistory, address: string): boolean {
  const want = (address.includes('@') ? `<${address}>` : `<${address}@`).toLowerCase();
  return h.events.some((e) => e.fields.toLowerCase().includes(want));
}
