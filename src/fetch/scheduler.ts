// When to fetch: every POP3 account of a route when the route comes online, on the route's
// schedule, and on `tidemail fetch [ACCOUNT]` — never while the route is offline. One fetch per
// account at a time; an account whose password was refused, or whose server's certificate does
// not verify, is not retried on every link event (no retry storm): automatic fetches pause for an
// hour, `tidemail fetch` still tries. The same for an account whose server sent more than a
// message's size limit (pop3.ts cuts it): that message is then remembered as a suspect (in
// memory; a restart costs one more capped try) and held back from automatic fetches, which go on
// with the rest of the mailbox at the normal interval; `tidemail fetch` tries it again, last.

import fs from 'node:fs';
import { log } from '../log/log.js';
import type { FetchSpec, RouteProfile } from '../routes/profile.js';
import type { UidlStore } from './uidl-store.js';
import { fetchAccount, type FetchProgress, type FetchResult, type OverLimit } from './pop3.js';
import type { FetchEnvelope } from './recipients.js';

const AUTH_FAILURE_PAUSE_MS = 3_600_000;
/** After a temporary failure (server busy, mailbox in use, dropped connection) try again soon. */
const RETRY_AFTER_ERROR_MS = 60_000;

export interface AccountState {
  account: string;
  route: string;
  lastRun: number | null;
  last: FetchResult | null;
  running: boolean;
  /** While running: how far the current fetch is (for `tidemail fetch` on a terminal). */
  progress?: FetchProgress;
  /** Messages (by UIDL) that went over their size limit: held back from automatic fetches. */
  suspects?: OverLimit[];
}

/** Failures that the next automatic run would only repeat (a message cut at its limit: once more). */
const needsAttention = (r: FetchResult | null | undefined) => !!(r?.authFailed || r?.tlsFailed || r?.overLimit?.some((o) => !o.held));

/** The password file was written after `t`: a refused login is worth trying again now. */
function changedSince(file: string, t: number): boolean {
  try {
    const st = fs.statSync(file);
    return Math.max(st.mtimeMs, st.ctimeMs) >= t;
  } catch {
    return false;
  }
}

export class FetchScheduler {
  private accounts = new Map<string, FetchSpec>();
  private readonly state = new Map<string, AccountState>();
  private readonly running = new Map<string, Promise<FetchResult>>();

  constructor(
    private readonly uidls: UidlStore,
    private readonly isOnline: (route: string) => boolean,
    /** Queues one fetched message durably for the account's recipients. */
    private readonly submit: (account: FetchSpec, body: AsyncIterable<Buffer>, envelope: FetchEnvelope) => Promise<void>,
    /** [smtp] max_message_size, read at each fetch (it may change on reload). */
    private readonly maxMessageSize: () => number | undefined = () => undefined,
  ) {}

  private readonly timers = new Map<string, NodeJS.Timeout>();
  /**
   * Aborted by stop(): a running fetch is cut at once (no QUIT, so none of its DELEs count).
   * Before, shutdown waited for it, and a server drip-feeding a RETR held `systemctl stop` for
   * the RETR's whole deadline (30 s + its size cap at 1 KiB/s: hours for a large message).
   */
  private readonly aborter = new AbortController();

  setRoutes(routes: readonly RouteProfile[]): void {
    const before = this.accounts;
    this.accounts = new Map(routes.flatMap((r) => r.fetch.map((f) => [f.name, f] as const)));
    // A changed account (new password, CA, server) gets a fresh start: no pause from old failures.
    for (const [name, a] of this.accounts) if (before.has(name) && JSON.stringify(before.get(name)) !== JSON.stringify(a)) this.state.delete(name);
    for (const [name, t] of this.timers) if (!this.accounts.has(name)) (clearTimeout(t), this.timers.delete(name));
    for (const a of this.accounts.values()) this.arm(a, a.intervalMs);
  }

  /** The next automatic fetch of an account (it is skipped while the route is offline). */
  private arm(a: FetchSpec, ms: number): void {
    clearTimeout(this.timers.get(a.name));
    const t = setTimeout(() => void this.fetch(this.accounts.get(a.name) ?? a, true), ms);
    t.unref();
    this.timers.set(a.name, t);
  }

  stop(): void {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    this.aborter.abort();
  }

  /** The route came online or its schedule fired. */
  async fetchRoute(route: string, automatic = true): Promise<FetchResult[]> {
    const mine = [...this.accounts.values()].filter((a) => a.route === route);
    return Promise.all(mine.map((a) => this.fetch(a, automatic)));
  }

  /** `tidemail fetch [ACCOUNT]`: the named account, or every account on an online route. */
  async fetchNow(name?: string): Promise<Record<string, FetchResult>> {
    const targets = name ? [this.accounts.get(name)].filter((a): a is FetchSpec => !!a) : [...this.accounts.values()];
    if (name && !targets.length) throw new Error(`no fetch account "${name}" (accounts: ${[...this.accounts.keys()].join(', ') || 'none'})`);
    const out: Record<string, FetchResult> = {};
    for (const a of targets) out[a.name] = await this.fetch(a, false);
    return out;
  }

  private fetch(a: FetchSpec, automatic: boolean): Promise<FetchResult> {
    const st = this.stateOf(a);
    if (!this.isOnline(a.route)) {
      return Promise.resolve({ fetched: 0, deleted: 0, skipped: 0, bytes: 0, error: `route ${a.route} is offline; not fetched` });
    }
    const last = st.last;
    if (automatic && last && needsAttention(last) && st.lastRun && Date.now() - st.lastRun < AUTH_FAILURE_PAUSE_MS && !(last.authFailed && changedSince(a.passwordFile, st.lastRun))) {
      return Promise.resolve(last);
    }
    const busy = this.running.get(a.name);
    if (busy) return busy;
    st.running = true;
    st.progress = undefined;
    const suspects = new Map((st.suspects ?? []).map((o) => [o.uidl!, o] as const));
    const run = fetchAccount(a, {
      uidls: this.uidls,
      submit: (acct, body, env) => this.submit(acct as FetchSpec, body, env),
      onProgress: (p) => (st.progress = p),
      maxMessageSize: this.maxMessageSize(),
      suspects,
      retrySuspects: !automatic,
      signal: this.aborter.signal,
    })
      .then((r) => {
        st.last = r;
        // Suspects are tried last: a run that failed otherwise may not have reached them.
        if (r.overLimit) st.suspects = r.overLimit.filter((o) => o.uidl !== undefined);
        else if (!r.error) st.suspects = undefined;
        if (r.error) log.warn(null, 'fetch failed', { account: a.name, error: r.error });
        else if (r.fetched || r.skipped) log.info(null, 'fetched', { account: a.name, fetched: r.fetched, deleted: r.deleted, skipped: r.skipped, bytes: r.bytes });
        return r;
      })
      .finally(() => {
        st.running = false;
        st.progress = undefined;
        st.lastRun = Date.now();
        this.running.delete(a.name);
        if (this.accounts.has(a.name)) {
          // Only held-back suspects to report: not an error to retry soon, the rest was fetched.
          const heldOnly = !!st.last?.overLimit?.length && !needsAttention(st.last);
          const temporary = st.last?.error && !needsAttention(st.last) && !heldOnly;
          this.arm(a, temporary ? Math.min(a.intervalMs, RETRY_AFTER_ERROR_MS) : a.intervalMs);
        }
      });
    this.running.set(a.name, run);
    return run;
  }

  private stateOf(a: FetchSpec): AccountState {
    let st = this.state.get(a.name);
    if (!st) this.state.set(a.name, (st = { account: a.name, route: a.route, lastRun: null, last: null, running: false }));
    return st;
  }

  states(): AccountState[] {
    return [...this.accounts.values()].map((a) => this.stateOf(a));
  }

  /** Resolves when no fetch is running (shutdown). */
  async idle(): Promise<void> {
    await Promise.allSettled([...this.running.values()]);
  }
}
