// What a delivery job's results mean for the queue: per recipient delivered, deferred (with
// back-off), waiting, interrupted or bounced, turned into the ordered steps of a ResultPlan
// (notifications first, then updates, then deletions) that pending-results.ts runs and retries.
// The runner decides what to deliver; this file only decides what the outcome changes.

import type { Config } from '../config/schema.js';
import { formatDuration } from '../config/units.js';
import type { Notice } from '../intake/bounce.js';
import { log } from '../log/log.js';
import { composeDsn, readHeaders, statusOf, type DsnRecipient } from '../queue/bounce.js';
import type { Envelope, EnvelopeUpdate, QueueStore } from '../queue/store.js';
import { isExpired, needsDelayWarning, retryDelay } from '../schedule/backoff.js';
import type { ResultPlan } from './pending-results.js';
import type { RouteState } from './runner.js';
import type { DeliveryResult } from './transport.js';

/** Attempts a stalled link may retry at once before the normal back-off applies. */
const RETRY_SOON_ATTEMPTS = 3;
/**
 * After the nth such failure: half a second, then a short pause (a neighbour entry that failed while
 * the carrier was down needs a moment after link-up), never a spin.
 */
const RETRY_SOON_MS = [500, 3000, 8000];

/** What the plan's steps need from the runner; read when a step runs (a reload may come between). */
export interface ResultContext {
  config(): Config;
  store: Pick<QueueStore, 'updateEnvelopes' | 'deleteEnvelopes' | 'readBody'>;
  /** Queues a notification through the runner's intake target; resolves with its queue id. */
  queueNotice(n: Notice): Promise<string>;
  /** A notification was queued: the runner should look at the queue. */
  queued(): void;
}

/** Refused in session: the client keeps the message, so it leaves the queue with no bounce. */
export function refusalPlan(store: ResultContext['store'], laneName: string, envs: Envelope[]): ResultPlan {
  const ids = envs.map((e) => e.envId);
  return { lane: laneName, envIds: ids, steps: [{ what: 'refused', run: () => store.deleteEnvelopes(ids) }] };
}

/**
 * What a job's results mean for the queue, as steps. `state` is the lane's (delivered count,
 * last error, failing since), updated here as the results are read; `now` is the runner's clock.
 */
export function resultPlan(
  ctx: ResultContext, state: RouteState, laneName: string, envs: Envelope[], results: Map<string, DeliveryResult>, now: number,
): ResultPlan {
  const q = ctx.config().queue;
  const archive = ctx.config().local.archive;
  const done: string[] = [];
  const updates: EnvelopeUpdate[] = [];
  const bounces: DsnRecipient[] = [];
  const warnings: DsnRecipient[] = [];
  for (const env of envs) {
    const r = results.get(env.envId) ?? { outcome: 'tempfail', message: 'no result from transport' };
    const fields = { to: `<${env.recipient}>`, route: laneName, relay: r.remote, result: r.message };
    if (r.outcome === 'ok') {
      log.info(env.envId, 'delivered', fields);
      state.delivered++;
      state.failingSince = null;
      done.push(env.envId);
      continue;
    }
    if (r.outcome === 'interrupted') {
      // The link went down under it: not an attempt and not a failure. Due again at once;
      // the next pass finds a route that is up, or records it as waiting for one.
      log.info(env.envId, 'interrupted by link down; stays queued', { to: fields.to, route: laneName, why: r.message });
      // No `route`: that would start the lifetime clock (first_attempt), and this was no attempt.
      updates.push({ envId: env.envId, attempts: env.attempts, nextAttempt: now, lastError: env.lastError ?? null });
      continue;
    }
    state.lastError = r.message;
    state.lastErrorAt = now;
    if (r.outcome === 'hold') {
      // The transport made no attempt (route cannot send now): wait for the route, no penalty.
      updates.push({ envId: env.envId, attempts: env.attempts, nextAttempt: now + q.noRouteRecheckMs, lastError: r.message, waiting: laneName });
      continue;
    }
    if (r.outcome === 'tempfail') state.failingSince ??= now;
    const firstAttempt = env.firstAttempt ?? now;
    if (r.outcome === 'permfail' || (r.outcome === 'tempfail' && isExpired(q, firstAttempt, now))) {
      const expired = r.outcome !== 'permfail';
      log.info(env.envId, expired ? 'bounced: expired' : 'bounced', fields);
      done.push(env.envId);
      // The [local] archive copy is the site's, not a recipient the sender gave: a DSN would name
      // its path or address (sender-view.ts hides it too). The postmaster has the log line above.
      if (env.recipient === archive) log.warn(env.envId, 'dropped: no DSN for the [local] archive copy', { to: `<${env.recipient}>`, why: 'the archive is not a recipient the sender gave' });
      else if (env.sender) {
        const status = expired ? '4.4.7' : statusOf(r.message, 'failed');
        bounces.push({ recipient: env.recipient, action: 'failed', status, diagnostic: r.message, route: laneName, remote: r.remote, expiredAfter: expired ? formatDuration(q.maxLifetimeMs) : undefined });
      }
      else log.warn(env.envId, 'dropped: no DSN for a message from the null sender', { to: `<${env.recipient}>`, why: 'it is a notification itself; bouncing it could loop' });
      continue;
    }
    const attempts = env.attempts + 1;
    const warn = needsDelayWarning(q, firstAttempt, now, env.warned, env.sender);
    if (warn && env.recipient !== archive) warnings.push({ recipient: env.recipient, action: 'delayed', status: statusOf(r.message, 'delayed'), diagnostic: r.message, route: laneName, remote: r.remote });
    // A connection the link stopped carrying is tried again at once on a new one — for the
    // first few attempts only, so a peer that always stalls gets the normal back-off.
    const nextAttempt = r.retrySoon && attempts <= RETRY_SOON_ATTEMPTS ? now + RETRY_SOON_MS[attempts - 1]! : now + retryDelay(q, attempts);
    log.info(env.envId, 'deferred', { ...fields, attempts, retry: new Date(nextAttempt).toISOString() });
    updates.push({ envId: env.envId, attempts, nextAttempt, lastError: r.message, warned: warn || undefined, route: laneName });
  }
  const first = envs[0]!;
  // Notifications first: once the envelopes are gone, so is the original message. A step that
  // fails is retried later, and the ones after it wait: no deletion before the bounce is stored.
  const steps: ResultPlan['steps'] = [];
  if (bounces.length) steps.push({ what: 'bounce', run: () => notify(ctx, first, bounces) });
  if (warnings.length) steps.push({ what: 'delay-notice', run: () => notify(ctx, first, warnings) });
  if (updates.length) steps.push({ what: 'deferred', run: () => ctx.store.updateEnvelopes(updates) });
  if (done.length) steps.push({ what: 'done', run: () => ctx.store.deleteEnvelopes(done) });
  return { lane: laneName, envIds: envs.map((e) => e.envId), steps };
}

/** Queues a DSN to the sender of `env`'s message; rejects when it cannot be stored. */
async function notify(ctx: ResultContext, env: Envelope, recipients: DsnRecipient[]): Promise<void> {
  // Unreadable original headers cost the DSN its copy of them, not the DSN itself.
  const headers = await readHeaders(ctx.store.readBody(env.msgid)).catch((err: Error) => {
    log.warn(env.msgid, 'original headers unreadable; the notification goes without them', { error: err.message });
    return Buffer.alloc(0);
  });
  const config = ctx.config();
  const text = composeDsn({
    hostname: config.hostname,
    msgid: env.msgid,
    sender: env.sender,
    arrival: env.created,
    recipients,
    originalHeaders: headers,
    giveUpAfter: formatDuration(config.queue.maxLifetimeMs),
  });
  let id: string;
  try {
    id = await ctx.queueNotice({ about: env.msgid, to: env.sender, text });
  } catch (err) {
    log.error(env.msgid, 'could not queue delivery status notification; the original stays queued', { error: (err as Error).message });
    throw err;
  }
  log.info(id, recipients[0]!.action === 'delayed' ? 'delay notice queued' : 'bounce queued', { to: `<${env.sender}>`, for: env.msgid });
  ctx.queued();
}
