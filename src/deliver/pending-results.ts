// Delivery results that could not be written to the queue (a full state disk, mostly).
//
// A delivered envelope that is still in the queue would be sent again at once — on a full disk,
// over and over. So a result that cannot be stored is kept here, in memory: its envelopes are
// never handed to a transport again while the process lives, the write is retried with
// back-off, and the lane (route, or local delivery) is paused — no new deliveries on it — until
// everything it owes the queue is stored. After a crash or restart the queue still says
// "queued", so such a message can be sent once more: at most one duplicate per restart.

import { log } from '../log/log.js';
import { messageIdOf } from '../queue/ids.js';

const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 60_000;

/** What one job's results mean for the queue: steps run in order, each done once. */
export interface ResultPlan {
  lane: string;
  /** The envelopes whose state the plan records. */
  envIds: string[];
  /** e.g. queue the bounce, then update the deferred, then delete the delivered and bounced. */
  steps: { what: string; run: () => Promise<void> }[];
}

export class PendingResults {
  private readonly plans: ResultPlan[] = [];
  private readonly covered = new Set<string>();
  private readonly paused = new Map<string, string>();
  private timer: NodeJS.Timeout | null = null;
  private delayMs = FIRST_RETRY_MS;
  private retries = 0;
  private retrying: Promise<void> | null = null;

  /** `resumed(lane, envIds)`: the lane's results are all stored; deliveries may go on. */
  constructor(private readonly resumed: (lane: string, envIds: string[]) => void) {}

  /** Whether the envelope's latest result is only in memory (never deliver it again now). */
  has(envId: string): boolean {
    return this.covered.has(envId);
  }

  get size(): number {
    return this.covered.size;
  }

  /** Why the lane is paused, or undefined. */
  pausedWhy(lane: string): string | undefined {
    const error = this.paused.get(lane);
    return error === undefined ? undefined : `delivery results cannot be stored in the queue: ${error}`;
  }

  /** Records a job's results; if the queue cannot take them, keeps them and pauses the lane. */
  async apply(plan: ResultPlan): Promise<void> {
    try {
      await runSteps(plan);
    } catch (err) {
      this.keep(plan, err as Error);
    }
  }

  private keep(plan: ResultPlan, err: Error): void {
    this.plans.push(plan);
    for (const id of plan.envIds) this.covered.add(id);
    const first = !this.paused.has(plan.lane);
    if (first) this.paused.set(plan.lane, err.message);
    log.error(messageOf(plan), 'could not record delivery results; kept in memory, not sent again', {
      route: plan.lane, envelopes: plan.envIds.length, pending: plan.steps.map((s) => s.what).join(','), error: err.message,
    });
    if (first) log.warn(null, 'route paused: no new deliveries until its results are stored', { route: plan.lane, error: err.message });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.retrying) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.retrying = this.retry().finally(() => {
        this.retrying = null;
        if (this.plans.length) this.schedule();
      });
    }, this.delayMs);
    this.timer.unref();
  }

  /** One pass over the kept plans, oldest first; stops at the first write that still fails. */
  private async retry(): Promise<void> {
    this.retries++;
    while (this.plans.length) {
      const plan = this.plans[0]!;
      try {
        await runSteps(plan);
      } catch (err) {
        this.delayMs = Math.min(this.delayMs * 2, MAX_RETRY_MS);
        log.warn(null, 'still cannot record delivery results', {
          attempt: this.retries, waiting: this.covered.size, retry: `${Math.round(this.delayMs / 1000)}s`, error: (err as Error).message,
        });
        return;
      }
      this.plans.shift();
      for (const id of plan.envIds) this.covered.delete(id);
      log.info(messageOf(plan), 'delivery results recorded', { route: plan.lane, envelopes: plan.envIds.length, attempt: this.retries });
      if (!this.plans.some((p) => p.lane === plan.lane)) {
        this.paused.delete(plan.lane);
        log.info(null, 'route resumed', { route: plan.lane });
      }
      this.resumed(plan.lane, plan.envIds);
    }
    this.delayMs = FIRST_RETRY_MS;
    this.retries = 0;
  }

  /** At shutdown: one last try; what still fails is said plainly (it may be sent again). */
  async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.retrying;
    if (this.plans.length) await this.retry();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.covered.size) {
      log.error(null, 'stopping with delivery results that could not be stored; those messages may be delivered once more after the restart', {
        envelopes: this.covered.size,
      });
    }
  }
}

async function runSteps(plan: ResultPlan): Promise<void> {
  while (plan.steps.length) {
    await plan.steps[0]!.run();
    plan.steps.shift();
  }
}

/** The message a plan is about, for its log lines. */
function messageOf(plan: ResultPlan): string | null {
  const first = plan.envIds[0];
  return first === undefined ? null : messageIdOf(first);
}
