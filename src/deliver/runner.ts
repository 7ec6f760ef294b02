// The delivery loop: take what is due, choose a route per recipient, hand jobs to transports,
// record results. Woken by new mail, by `flush`, by links coming up, and by its own timer set
// to the next due time (never more often than needed; idle means no work at all).

import { pipeline } from 'node:stream';
import type { Config } from '../config/schema.js';
import { log } from '../log/log.js';
import { submitBounce, type Notice } from '../intake/bounce.js';
import type { QueueAdmin } from '../queue/admin.js';
import type { Clock, Envelope, EnvelopeUpdate, QueueStore, RecipientWaiting } from '../queue/store.js';
import type { RewriteSpec, RouteProfile } from '../routes/profile.js';
import { selectRoute } from '../routes/select.js';
import { HeaderRewriter, needsHeaderRewrite, rewriteEnvelopeSender, type RewriteContext } from '../routes/rewrite.js';
import { createTransport, jobKey } from './factory.js';
import { selfCheck } from '../relay/self.js';
import type { DeliveryJob, DeliveryResult, Transport } from './transport.js';
import { PendingResults } from './pending-results.js';
import { refusalPlan, resultPlan, type ResultContext } from './result-plan.js';

const BATCH = 500;
/** Upper bound of the sleep between passes, so a clock jump cannot stall the queue for long. */
const MAX_SLEEP_MS = 15 * 60_000;
const MAX_JOBS_IN_FLIGHT = 64;
/** How soon to look again when everything due is kept back in memory and nothing else is known. */
const HELD_RECHECK_MS = 60_000;

export interface RouteState {
  lastError: string | null;
  lastErrorAt: number | null;
  delivered: number;
  /** First temporary failure since the last delivery ([alerts] route_failing); null when the last one worked. */
  failingSince?: number | null;
  /** Why no new deliveries start on this lane (its results cannot be stored), or null. */
  paused?: string | null;
}

/** Where a job goes: a route's transport, or local delivery. */
interface Lane {
  name: string;
  transport(): Transport;
  rewrite: RewriteSpec | null;
  /** The route behind it (none for local delivery). */
  route?: RouteProfile;
}

/** Local delivery as the runner sees it. */
export interface LocalLane {
  isLocal(address: string): boolean;
  transport: Transport;
}

/** How long a stop waits for deliveries in flight before it cuts the remote sessions. */
const STOP_GRACE_MS = 10_000;

export class DeliveryRunner {
  private timer: NodeJS.Timeout | null = null;
  /** When `timer` fires (Infinity: no timer). */
  private timerAt = Infinity;
  /** The timer was set for new waiting mail alone (not from the queue's due times). */
  private timerForRecheck = false;
  /** The earliest recheck of new mail stored as waiting (waitingAt) that no pass has reached yet. */
  private recheckBy = Infinity;
  private running = false;
  private again = false;
  private stopped = false;
  /** Envelopes being delivered, with the job that has them. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** Envelopes whose job ended while a pass was reading the queue (its snapshot may predate their removal). */
  private readonly finishedDuringPass = new Set<string>();
  private jobsInFlight = 0;
  private readonly jobDone: (() => void)[] = [];
  private transports = new Map<string, Transport>();
  readonly routeState = new Map<string, RouteState>();
  /** Results the queue could not take (full disk): kept in memory, their lanes paused. */
  private readonly pending = new PendingResults((lane, envIds) => this.resumed(lane, envIds));
  /** Due envelopes a pass left alone because their lane is paused (envId → lane). */
  private readonly skippedPaused = new Map<string, string>();
  /** Envelopes whose "waiting for a route" update could not be written: not before this time. */
  private readonly heldUntil = new Map<string, number>();

  constructor(
    /** Storage, and releasing mail that waits for a route when the routes change. */
    private readonly store: QueueStore & Pick<QueueAdmin, 'releaseWaiting'>,
    private config: Config,
    private routes: RouteProfile[],
    private readonly isOnline: (r: RouteProfile) => boolean = () => true,
    private readonly local: LocalLane | null = null,
    /** The same clock the store was opened with: due times, back-off and lifetimes are read from it. */
    private readonly clock: Clock = Date.now,
  ) {}

  /** How notifications enter the queue: the intake pipeline, with the daemon's signers once it sets them. */
  private queueNotice: (n: Notice) => Promise<string> = (n) =>
    submitBounce({ openMessage: () => this.store.openMessage() }, { hostname: this.config.hostname, checks: [] }, n);

  /** Bounces and delay notices go through `queue` (the daemon's intake target and signers). */
  queueNoticesWith(queue: (n: Notice) => Promise<string>): void {
    this.queueNotice = queue;
  }

  private laneOf(route: RouteProfile): Lane {
    return { name: route.name, transport: () => this.transportFor(route), rewrite: route.rewrite, route };
  }

  private localLane(): Lane {
    return { name: 'local', transport: () => this.local!.transport, rewrite: null };
  }

  /** New config/routes (reload): transports are rebuilt lazily. */
  async reconfigure(config: Config, routes: RouteProfile[]): Promise<void> {
    this.config = config;
    this.routes = routes;
    const old = this.transports;
    this.transports = new Map();
    await Promise.all([...old.values()].map((t) => t.close()));
    // Routes changed: whatever waited for a route gets looked at again now.
    await this.store.releaseWaiting(null).catch((err: Error) => log.warn(null, 'could not requeue waiting mail', { error: err.message }));
    this.wake();
  }

  /**
   * ROUTE's link went down: its sessions are cut now (not minutes later, when TCP gives up on
   * a dead connection) and their envelopes go back to the queue without counting an attempt.
   * Routes that do not use this link are not touched.
   */
  interrupt(route: string, why: string): void {
    this.transports.get(route)?.interrupt?.(why);
  }

  /** ROUTE's link is up again: sessions held across the link-down learn it (smtp-after-dot.ts). */
  resume(route: string): void {
    this.transports.get(route)?.resume?.();
  }

  getRoutes(): readonly RouteProfile[] {
    return this.routes;
  }

  /** Run a pass as soon as possible. */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = this.clock();
    this.timerForRecheck = false;
    this.timer = setTimeout(() => void this.pass(), 0);
  }

  /**
   * A recipient of new mail as a pass would see it now: null when it can go (local delivery, or
   * a route that is up), else the "waiting for a route" state the pass would record. The intake
   * stores that with the message, so new mail with no usable route costs no pass (Postfix's qmgr
   * does not rescan either); a reload or a link coming up releases it like any waiting mail.
   */
  waitingAt(sender: string, recipient: string): RecipientWaiting | null {
    if (this.local?.isLocal(recipient)) return null;
    const choice = selectRoute(this.routes, sender, recipient, this.isOnline);
    if (choice.route) return null;
    const nextAttempt = this.clock() + this.config.queue.noRouteRecheckMs;
    // Looked at again by then even if no pass runs meanwhile (its row may not be committed
    // yet when the next pass asks the queue for its earliest due time).
    this.recheckBy = Math.min(this.recheckBy, nextAttempt);
    if (!this.running && !this.stopped && nextAttempt < this.timerAt) this.setTimer(nextAttempt, true);
    return { waiting: choice.waitingFor ?? '*', lastError: choice.reason, nextAttempt };
  }

  /** (Re)arms the timer for a pass at `at`, unless one is due sooner. */
  private setTimer(at: number, recheck = false): void {
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.min(Math.max(at - this.clock(), 0), MAX_SLEEP_MS);
    this.timerAt = this.clock() + delay;
    this.timerForRecheck = recheck;
    this.timer = setTimeout(() => void this.pass(), delay);
    this.timer.unref();
  }

  /** Runs passes until nothing is due now (used by `runq` without a daemon). */
  async drain(): Promise<void> {
    do {
      this.again = false;
      await this.pass(false);
      await this.waitAllJobs();
    } while (this.again);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    // Deliveries in flight may finish, but one held for a reply across a link-down would wait
    // for the link or data_done_timeout: it is cut now (its message stays queued).
    for (const t of this.transports.values()) t.stopWaiting?.();
    const all = this.waitAllJobs();
    let grace: NodeJS.Timeout | undefined;
    const late = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (grace = setTimeout(() => r(true), STOP_GRACE_MS)))]);
    clearTimeout(grace);
    if (late) {
      // A silent server would hold the stop for its reply deadline (minutes) and a supervisor
      // then kills us mid-session: the remote sessions are cut as on a link-down instead, their
      // messages stay queued, not counted as an attempt (what Postfix's stop does to its smtp).
      log.info(null, `stopping: ${this.jobsInFlight} deliveries still in flight after ${STOP_GRACE_MS / 1000} s are cut; their mail stays queued`);
      for (const t of this.transports.values()) {
        t.interrupt?.('daemon stopping');
        t.stopWaiting?.();
      }
      await all;
    }
    await this.pending.flush();
    await Promise.all([...this.transports.values()].map((t) => t.close()));
  }

  private async waitAllJobs(): Promise<void> {
    while (this.jobsInFlight > 0) await new Promise<void>((r) => this.jobDone.push(r));
  }

  private transportFor(route: RouteProfile): Transport {
    let t = this.transports.get(route.name);
    if (!t) {
      t = createTransport(route, this.config.hostname, selfCheck(this.config));
      this.transports.set(route.name, t);
    }
    return t;
  }

  private async pass(schedule = true): Promise<void> {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    this.timer = null;
    this.timerAt = Infinity;
    try {
      const now = this.clock();
      if (this.recheckBy <= now) this.recheckBy = Infinity; // this pass's query sees those rows
      this.finishedDuringPass.clear();
      for (const [id, t] of this.heldUntil) if (t <= now) this.heldUntil.delete(id);
      const due = (await this.store.due(now, BATCH)).filter((e) => !this.heldInMemory(e.envId) && !this.finishedDuringPass.has(e.envId));
      const jobs = new Map<string, { lane: Lane; envs: Envelope[] }>();
      const waiting: EnvelopeUpdate[] = [];
      let progress = false;
      for (const env of due) {
        this.skippedPaused.delete(env.envId);
        if (this.local?.isLocal(env.recipient)) {
          if (this.pending.pausedWhy('local')) {
            this.skippedPaused.set(env.envId, 'local');
            continue;
          }
          const key = `${env.msgid}/local`;
          let job = jobs.get(key);
          if (!job) jobs.set(key, (job = { lane: this.localLane(), envs: [] }));
          job.envs.push(env);
          continue;
        }
        const choice = selectRoute(this.routes, env.sender, env.recipient, this.isOnline);
        if (!choice.route) {
          // Offline or no route: not an attempt, so no backoff and no lifetime penalty beyond
          // the clock; look again later or when a link/reload wakes us.
          waiting.push({
            envId: env.envId, attempts: env.attempts, nextAttempt: now + this.config.queue.noRouteRecheckMs, lastError: choice.reason,
            waiting: choice.waitingFor ?? '*',
          });
          continue;
        }
        if (this.pending.pausedWhy(choice.route.name)) {
          // Its results cannot be stored now: another delivery would only pile up more of them.
          this.skippedPaused.set(env.envId, choice.route.name);
          continue;
        }
        const key = jobKey(choice.route, env.msgid, env.recipient);
        let job = jobs.get(key);
        if (!job) jobs.set(key, (job = { lane: this.laneOf(choice.route), envs: [] }));
        job.envs.push(env);
      }
      if (waiting.length) {
        // If that cannot be written (full disk), they would stay due now and every pass would
        // try again at once: keep them back in memory until their recheck time instead.
        await this.store.updateEnvelopes(waiting).then(
          () => (progress = true),
          (err: Error) => {
            for (const u of waiting) this.heldUntil.set(u.envId, u.nextAttempt);
            log.warn(null, 'could not record mail waiting for a route; looking again later', { envelopes: waiting.length, error: err.message });
          },
        );
      }
      for (const { lane, envs } of jobs.values()) {
        while (this.jobsInFlight >= MAX_JOBS_IN_FLIGHT) await new Promise<void>((r) => this.jobDone.push(r));
        if (this.stopped) break;
        const free = envs.filter((e) => !this.heldInMemory(e.envId)); // a session may have taken some meanwhile
        // The link may have gone down while this pass waited for a free job: no attempt then.
        if (lane.route && !this.isOnline(lane.route)) {
          this.again = true;
          continue;
        }
        if (free.length) void this.startJob(lane, free);
        progress = true;
      }
      // A full batch of envelopes that all had to be left alone is no reason to look again at once.
      if (due.length === BATCH && progress) this.again = true;
    } catch (err) {
      log.error(null, 'delivery pass failed', { error: (err as Error).message });
    } finally {
      this.running = false;
    }
    if (this.again && schedule) {
      this.again = false;
      this.wake();
    } else if (schedule) await this.armTimer();
  }

  private async armTimer(): Promise<void> {
    if (this.stopped || this.running) return;
    const queued = (await this.nextWake().catch(() => null)) ?? Infinity;
    if (this.running || this.stopped) return;
    const next = Math.min(queued, this.recheckBy);
    if (next === Infinity) return; // nothing queued: sleep until new mail or an event wakes us
    this.setTimer(next, this.recheckBy < queued);
  }

  /** Kept back by this process: being delivered, result not stored yet, or a write that failed. */
  private heldInMemory(envId: string): boolean {
    return this.inFlight.has(envId) || this.pending.has(envId) || this.heldUntil.has(envId);
  }

  /**
   * When the next pass is needed. The queue's earliest due time, unless that envelope is kept
   * back in memory (in flight, paused lane, result not stored): then the first one that is not,
   * so a paused route or a running delivery does not make the loop spin.
   */
  private async nextWake(): Promise<number | null> {
    const next = await this.store.nextDue();
    const now = this.clock();
    if (next === null || next > now) return next;
    if (!this.inFlight.size && !this.pending.size && !this.skippedPaused.size && !this.heldUntil.size) return next;
    const rows = await this.store.due(Number.MAX_SAFE_INTEGER, BATCH);
    let t = Infinity;
    const free = rows.find((e) => !this.heldInMemory(e.envId) && !this.skippedPaused.has(e.envId));
    if (free) t = free.nextAttempt;
    else if (rows.length === BATCH) t = now + HELD_RECHECK_MS; // more behind these: look later
    for (const until of this.heldUntil.values()) t = Math.min(t, until);
    return t === Infinity ? null : t;
  }

  /** A lane's results are all stored again: what it skipped meanwhile is due again. */
  private resumed(lane: string, envIds: string[]): void {
    if (this.running) for (const id of envIds) this.finishedDuringPass.add(id);
    const state = this.routeState.get(lane);
    if (!this.pending.pausedWhy(lane)) {
      for (const [id, l] of this.skippedPaused) if (l === lane) this.skippedPaused.delete(id);
      if (state) state.paused = null;
    }
    this.wake();
  }

  /** Runs one job; resolves with its results once they are recorded or kept (never rejects). */
  private startJob(lane: Lane, envs: Envelope[], refuse?: (results: Map<string, DeliveryResult>) => boolean): Promise<Map<string, DeliveryResult> | null> {
    const first = envs[0]!;
    this.jobsInFlight++;
    const rewrite = lane.rewrite;
    const rw: RewriteContext | null = rewrite ? { spec: rewrite, localDomains: new Set([...this.config.local.domains, this.config.hostname.toLowerCase()]) } : null;
    const headers = rw !== null && needsHeaderRewrite(rw.spec);
    const job: DeliveryJob = {
      msgid: first.msgid,
      sender: rw ? rewriteEnvelopeSender(first.sender, rw) : first.sender,
      size: first.size,
      recipients: envs,
      body: () => (headers ? pipeline(this.store.readBody(first.msgid), new HeaderRewriter(rw!), () => undefined) : this.store.readBody(first.msgid)),
    };
    const running = lane
      .transport()
      .deliver(job)
      .catch((err: Error) => {
        // Left without a result the envelopes would be due again at once: a retry, with back-off.
        log.error(first.msgid, 'delivery failed unexpectedly', { route: lane.name, error: err.message });
        return new Map<string, DeliveryResult>(envs.map((e) => [e.envId, { outcome: 'tempfail', message: `4.3.0 internal error: ${err.message}` }]));
      })
      .then(async (results) => {
        // `refuse` (pre-queue delivery) may refuse the message in session: removed, no bounce.
        const plan = refuse?.(results)
          ? refusalPlan(this.store, lane.name, envs)
          : resultPlan(this.resultContext(), this.laneState(lane.name), lane.name, envs, results, this.clock());
        await this.pending.apply(plan);
        this.notePause(lane.name);
        return results;
      })
      .catch((err) => {
        log.error(first.msgid, 'delivery bookkeeping failed unexpectedly', { error: (err as Error).message });
        return null;
      })
      .finally(() => {
        for (const e of envs) {
          this.inFlight.delete(e.envId);
          if (this.running) this.finishedDuringPass.add(e.envId);
        }
        this.jobsInFlight--;
        this.jobDone.splice(0).forEach((r) => r());
        // A timer set only for new waiting mail does not know this job's next attempt.
        if (!this.running && (!this.timer || this.timerForRecheck)) void this.armTimer();
      });
    for (const e of envs) this.inFlight.set(e.envId, running);
    return running;
  }

  /**
   * Pre-queue delivery ("deliver, then answer"): delivers the local recipients of a message that
   * was just committed while the SMTP client waits, up to `deadlineMs`. Returns the reply text of
   * a permanent failure when *every* recipient of the message failed permanently — the session
   * then refuses the message (and it is removed, with no bounce). Otherwise null: 250, and
   * whatever failed is retried or bounced as usual. Past the deadline delivery goes on in the
   * background and null is returned; the client then has its 250, so a permanent failure
   * found later is bounced like any other.
   */
  async deliverNow(msgid: string, deadlineMs: number): Promise<string | null> {
    if (!this.local) return null;
    const paused = this.pending.pausedWhy('local');
    if (paused) {
      log.info(msgid, 'local delivery paused; answering 250, delivered later', { why: paused });
      return null;
    }
    const msg = await this.store.getMessage(msgid);
    if (!msg) return null;
    const mine = msg.recipients.filter((e) => this.local!.isLocal(e.recipient) && e.status === 'queued');
    // Another pass may already be delivering some of them: wait for that too.
    const busy = [...new Set(mine.map((e) => this.inFlight.get(e.envId)).filter((p) => p !== undefined))];
    const local = mine.filter((e) => !this.heldInMemory(e.envId));
    if (!local.length && !busy.length) return null;
    const allLocal = local.length === msg.recipients.length;
    let refusal: string | null = null;
    if (!local.length) {
      await Promise.race([Promise.all(busy), new Promise((r) => setTimeout(r, deadlineMs))]);
      return null;
    }
    let answered = false; // the deadline passed: the client is being told 250
    const run = this.startJob(this.localLane(), local, (results) => {
      if (answered) return false;
      const all = [...results.values()];
      if (!allLocal || !all.every((r) => r.outcome === 'permfail')) return false;
      refusal = all[0]!.message;
      for (const env of local) log.info(env.envId, 'refused in session', { to: `<${env.recipient}>`, result: results.get(env.envId)?.message });
      return true;
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'late'>((r) => (timer = setTimeout(() => ((answered = true), r('late')), deadlineMs)));
    const outcome = await Promise.race([Promise.all([run, ...busy]), deadline]);
    clearTimeout(timer);
    if (outcome === 'late') log.info(msgid, 'local delivery still running at the deadline; answering 250');
    return refusal;
  }

  /** Shows a paused lane in `tidemail status` (its last error says why). */
  private notePause(laneName: string): void {
    const why = this.pending.pausedWhy(laneName);
    if (!why) return;
    const state = this.laneState(laneName);
    if (state.paused === why) return;
    state.paused = why;
    state.lastError = `route paused: ${why}`;
    state.lastErrorAt = this.clock();
  }

  /** The lane's entry in routeState, made on first use. */
  private laneState(laneName: string): RouteState {
    const state = this.routeState.get(laneName) ?? { lastError: null, lastErrorAt: null, delivered: 0 };
    this.routeState.set(laneName, state);
    return state;
  }

  /** What result-plan.ts's steps use of the runner, read when they run. */
  private resultContext(): ResultContext {
    return { config: () => this.config, store: this.store, queueNotice: (n) => this.queueNotice(n), queued: () => this.wake() };
  }
}
