// Watches for [alerts] conditions on a timer and runs the actions: once when a condition starts,
// again at most every `repeat` while it lasts, and once more (if `cleared`) when it ends. A failed
// action is logged once and not retried before the next repeat: an alert endpoint that is down
// must not become a loop. The clock is injected (tests; a Pi without RTC may jump).

import { log } from '../log/log.js';
import { formatDuration } from '../config/units.js';
import type { AlertsConfig } from './config.js';
import { runActions, type ActionResult, type AlertEvent } from './notify.js';

/** What the daemon tells the monitor at each look. */
export interface AlertSources {
  /** Messages with recipients not on hold, created before `before`: how many, and the oldest. */
  waiting(before: number): Promise<{ count: number; oldest: { msgid: string; sender: string; created: number; lastError: string | null } | null }>;
  /** Each route's failure state from the runner, and how many recipients it has queued. */
  routes(): Promise<{ name: string; failingSince: number | null; lastError: string | null; lastErrorAt: number | null; queued: number }[]>;
  fetches(): { account: string; error: string | null }[];
}

export interface AlertRecord extends AlertEvent {
  results: ActionResult[];
}

/** An age for a person: whole seconds, minutes or hours. */
function age(ms: number): string {
  const unit = ms < 120_000 ? 1000 : ms < 7_200_000 ? 60_000 : 3_600_000;
  return formatDuration(Math.max(unit, Math.round(ms / unit) * unit));
}

interface Condition {
  kind: AlertEvent['kind'];
  subject: string;
  since: number;
  message: string;
}

interface Firing {
  since: number;
  lastSent: number;
  message: string;
}

export class AlertMonitor {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private readonly firing = new Map<string, Firing & { kind: AlertEvent['kind']; subject: string }>();
  /** When each fetch account was first seen FAILING (the scheduler keeps only the last result). */
  private readonly fetchSince = new Map<string, number>();
  /** When each route last had nothing queued: failures before that are history (mail removed, bounced). */
  private readonly routeIdle = new Map<string, number>();
  /** The first failure seen after a route was last empty (the runner's failingSince may be older). */
  private readonly routeFailStart = new Map<string, number>();
  /** The last answer to waiting(), and when it was asked (it reads the whole queue: not every tick). */
  private waitingSeen: { at: number; answer: Awaited<ReturnType<AlertSources['waiting']>> } | null = null;
  /** The last alert sent, with what each action said (`tidemail status`). */
  last: AlertRecord | null = null;

  constructor(
    private cfg: AlertsConfig,
    private readonly sources: AlertSources,
    private readonly host: () => string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts (or, after a reload, restarts) the timer; nothing runs without an action. */
  start(cfg: AlertsConfig = this.cfg): void {
    this.cfg = cfg;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!cfg.command && !cfg.url) return;
    this.timer = setInterval(() => void this.tick(), cfg.intervalMs);
    this.timer.unref();
  }

  stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    return this.running ?? Promise.resolve();
  }

  /** Conditions now firing, for status. */
  active(): { kind: string; subject: string; since: number; message: string }[] {
    return [...this.firing.values()].map(({ kind, subject, since, message }) => ({ kind, subject, since, message }));
  }

  /** One look; overlapping calls share the running one (a slow action must not pile up ticks). */
  tick(): Promise<void> {
    this.running ??= this.evaluate().catch((err: Error) => log.warn(null, 'alert check failed', { error: err.message })).finally(() => (this.running = null));
    return this.running;
  }

  private async conditions(now: number): Promise<Condition[]> {
    const c = this.cfg;
    const out: Condition[] = [];
    if (c.mailWaitingMs !== null) {
      // listMessages reads every envelope (~150 ms for 10 000 messages here): for a threshold of
      // hours, asking every tenth of it (1 s … 10 min) is soon enough.
      const every = Math.min(10 * 60_000, Math.max(c.intervalMs, c.mailWaitingMs / 10));
      if (!this.waitingSeen || now - this.waitingSeen.at >= every || now < this.waitingSeen.at) {
        this.waitingSeen = { at: now, answer: await this.sources.waiting(now - c.mailWaitingMs) };
      }
      const w = this.waitingSeen.answer;
      if (w.count && w.oldest) {
        const o = w.oldest;
        out.push({
          kind: 'mail-waiting', subject: 'queue', since: o.created + c.mailWaitingMs,
          message: `${w.count} message(s) waiting longer than ${formatDuration(c.mailWaitingMs)}; oldest ${o.msgid} from <${o.sender}>, ${age(now - o.created)} old${o.lastError ? `; last error: ${o.lastError}` : ''}`,
        });
      }
    }
    if (c.routeFailingMs !== null) {
      for (const r of await this.sources.routes()) {
        if (!r.queued) {
          this.routeIdle.set(r.name, now);
          this.routeFailStart.delete(r.name);
          continue;
        }
        const idle = this.routeIdle.get(r.name) ?? 0;
        if (r.failingSince === null || r.lastErrorAt === null || r.lastErrorAt < idle) {
          this.routeFailStart.delete(r.name);
          continue;
        }
        let since = this.routeFailStart.get(r.name);
        if (since === undefined) this.routeFailStart.set(r.name, (since = r.failingSince >= idle ? r.failingSince : r.lastErrorAt));
        if (now - since < c.routeFailingMs) continue;
        out.push({ kind: 'route-failing', subject: r.name, since, message: `route ${r.name}: no delivery has worked for ${age(now - since)}${r.lastError ? `; last error: ${r.lastError}` : ''}` });
      }
    }
    const fetches = this.sources.fetches();
    for (const f of fetches) {
      if (!f.error) this.fetchSince.delete(f.account);
      else if (!this.fetchSince.has(f.account)) this.fetchSince.set(f.account, now);
    }
    if (c.fetchFailingMs !== null) {
      for (const f of fetches) {
        const since = this.fetchSince.get(f.account);
        if (!f.error || since === undefined || now - since < c.fetchFailingMs) continue;
        out.push({ kind: 'fetch-failing', subject: f.account, since, message: `fetch ${f.account} FAILING: ${f.error}` });
      }
    }
    return out;
  }

  private async evaluate(): Promise<void> {
    const now = this.now();
    const current = await this.conditions(now);
    const seen = new Set<string>();
    for (const c of current) {
      const key = `${c.kind}:${c.subject}`;
      seen.add(key);
      const f = this.firing.get(key);
      if (!f) {
        this.firing.set(key, { kind: c.kind, subject: c.subject, since: c.since, lastSent: now, message: c.message });
        await this.send({ ...c, state: 'firing' }, now);
      } else {
        f.message = c.message;
        if (now - f.lastSent >= this.cfg.repeatMs) {
          f.lastSent = now;
          await this.send({ ...c, since: f.since, state: 'repeat' }, now);
        }
      }
    }
    for (const [key, f] of this.firing) {
      if (seen.has(key)) continue;
      this.firing.delete(key);
      if (this.cfg.cleared) await this.send({ kind: f.kind, subject: f.subject, since: f.since, state: 'cleared', message: `cleared after ${age(now - f.since)}: ${f.message}` }, now);
    }
  }

  private async send(c: Omit<AlertEvent, 'at' | 'host'>, now: number): Promise<void> {
    const ev: AlertEvent = { ...c, at: now, host: this.host() };
    log.warn(null, `alert ${ev.state}`, { kind: ev.kind, subject: ev.subject, message: ev.message });
    const results = await runActions(this.cfg, ev);
    for (const r of results) {
      if (r.ok) log.info(null, 'alert sent', { kind: ev.kind, subject: ev.subject, state: ev.state, action: r.action, result: r.detail });
      // Once per alert: the next try is the next repeat (or the cleared notice), not a loop.
      else log.warn(null, 'alert action failed', { kind: ev.kind, subject: ev.subject, state: ev.state, action: r.action, error: r.detail, retry: `at the next repeat (${formatDuration(this.cfg.repeatMs)})` });
    }
    this.last = { ...ev, results };
  }
}
