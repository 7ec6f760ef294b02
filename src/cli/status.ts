// `tidemail status`: one screen on whether mail flows — the daemon, each route's link (with the
// reason), what is queued per route and state, the oldest message, the latest problems, and
// the POP3 accounts. With the daemon down it reads the queue database and asks each route's
// link detectors once itself, so the answer is the same kind of screen.

import fs from 'node:fs';
import path from 'node:path';
import type { Db } from '../queue/db.js';
import { lastFetched, openQueueDbReadOnly, recentProblems, type StoredEvent } from '../queue/events.js';
import { loadRoutes } from '../routes/load.js';
import { withRelayRoutes } from '../relay/routes.js';
import { describeTarget } from '../routes/profile.js';
import { queueSummary, type QueueSummary } from '../queue/summary.js';
import { probeLinks } from '../doctor/links.js';
import { maildropDir } from '../queue/maildrop.js';
import { BAD_MAX_AGE_MS, maildropCounts } from '../queue/maildrop-leftovers.js';
import { describeWait, type PickupWait } from '../queue/maildrop-space.js';
import { UsageError } from '../errors.js';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { printable, printableJson, printableLines } from '../log/printable.js';

interface RouteStatus {
  name: string;
  target: string;
  online: boolean;
  since?: number;
  why?: string;
  queued?: number;
  lastError?: string | null;
  lastErrorAt?: number | null;
  delivered?: number;
  /** Set while the route's delivery results cannot be stored (full disk): nothing new is sent. */
  paused?: string | null;
}

interface FetchStatus {
  account: string;
  route: string;
  lastRun: number | null;
  running: boolean;
  last: { fetched: number; error?: string } | null;
  /** When a message from this account last entered the queue (from the history). */
  lastMessage?: number;
}

interface DaemonStatus {
  pid: number;
  since: number;
  config: string | null;
  /** Admin socket only: when the running configuration was read, a failed reload, restarts. */
  loadedAt?: number;
  reloadError?: { at: number; message: string } | null;
  needsRestart?: string[];
  localDelivery?: { helperPid: number | null; helperStopped: string | null; runsAs: string };
  secrets?: { file: string; readAt: number; error?: string }[];
  /** Set while the maildrop pickup waits for free space. */
  maildropWait?: PickupWait | null;
  alerts?: AlertsStatus | null;
  queue: QueueSummary;
  noRoute?: number;
  routes: RouteStatus[];
  fetch?: FetchStatus[];
}

/** [alerts]: the last alert sent (with each action's result) and the conditions firing now. */
interface AlertsStatus {
  last: { kind: string; subject: string; state: string; message: string; at: number; results: { action: string; ok: boolean; detail: string }[] } | null;
  active: { kind: string; subject: string; since: number; message: string }[];
}

/** Queued recipients per route and state; '' = not routed yet, '*' = no online route. */
type ByRoute = Record<string, Record<string, number>>;

export interface StatusReport {
  daemon: { running: boolean; pid?: number; since?: number };
  config: string | null;
  /** The configuration on disk is not what runs: a failed reload (file:line) or edits not loaded yet. */
  configNotLoaded: string | null;
  /** Changed settings a reload could not apply to the running listeners. */
  needsRestart: string[];
  /** Whose rights local mail is written with (admin socket; null when unknown). */
  localDelivery: string | null;
  /** Secret files the daemon used: which, and when it read them. */
  secrets: { file: string; readAt: number; error?: string }[];
  /** Files in the maildrop the daemon has not taken yet (null: this user cannot look). */
  maildrop: number | null;
  /** Entries the pickup refused and set aside as .bad-* for the administrator (null: this user cannot look). */
  maildropSetAside: number | null;
  /** The daemon's pickup waits for free space (queue/maildrop-space.ts). */
  maildropWait: PickupWait | null;
  queue: QueueSummary;
  byRoute: ByRoute | null;
  routes: RouteStatus[];
  fetch: FetchStatus[];
  problems: StoredEvent[];
  alerts: AlertsStatus | null;
}

const ago = (t: number) => {
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 120 ? `${s}s ago` : s < 7200 ? `${Math.round(s / 60)}m ago` : s < 172_800 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86_400)}d ago`;
};

async function byRouteAndState(db: Db): Promise<ByRoute> {
  const rows = await db.all<{ r: string; state: string; n: number }>(
    `SELECT COALESCE(waiting, route, '') AS r,
       CASE WHEN status = 'hold' THEN 'on hold' WHEN waiting IS NOT NULL THEN 'waiting for link'
            WHEN attempts > 0 THEN 'deferred' ELSE 'not tried yet' END AS state,
       COUNT(*) AS n
     FROM recipients GROUP BY r, state`,
  );
  const out: ByRoute = {};
  for (const x of rows) (out[x.r] ??= {})[x.state] = x.n;
  return out;
}

const PROBLEM_WINDOW_MS = 24 * 3_600_000;

/** openStore() needs write access (it may migrate); a read-only look is enough otherwise. */
function canWrite(stateDir: string): boolean {
  try {
    fs.accessSync(path.join(stateDir, 'queue.sqlite'), fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why the configuration on disk is not the one running: the last reload failed (its file:line
 * message), or a file changed after the daemon read it.
 */
function configNotLoaded(file: string | null, configDir: string | null, st: DaemonStatus): string | null {
  if (st.reloadError) return st.reloadError.message.replace(/\s*\n\s*/g, ' ');
  if (st.loadedAt === undefined) return null;
  const files = [...(file ? [file] : []), ...(configDir ? listToml(path.join(configDir, 'routes')) : [])];
  for (const f of files) {
    try {
      if (fs.statSync(f).mtimeMs > st.loadedAt) return `${f} changed ${ago(fs.statSync(f).mtimeMs)}, after the daemon read it (load it: tidemail reload or kill -HUP ${st.pid})`;
    } catch {
      /* gone or unreadable: the daemon's own reload will say */
    }
  }
  return null;
}

function listToml(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((n) => n.endsWith('.toml')).map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}

export async function runStatus(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const json = args.includes('--json');
  const extra = args.filter((a) => a !== '--json');
  if (extra.length) throw new UsageError(`unexpected argument "${extra[0]}"\nusage: tidemail status [--json] [--config FILE]`);
  const st = (await ctx.ask({ cmd: 'status' }, 10_000)) as DaemonStatus | null;

  // The database, read-only: counts by route and state, recent problems, fetch history. A user
  // who may not read it (it is the daemon's, mode 0600) still gets the daemon's view.
  let db: Db | null = null;
  if (fs.existsSync(path.join(ctx.config.stateDir, 'queue.sqlite'))) db = await openQueueDbReadOnly(ctx.config.stateDir).catch(() => null);
  const drop = maildropCounts(maildropDir(ctx.config.stateDir)) ?? { waiting: null, setAside: null }; // null: 1733, only root and the daemon may look
  const report: StatusReport = {
    daemon: st ? { running: true, pid: st.pid, since: st.since } : { running: false },
    config: ctx.config.file,
    configNotLoaded: st ? configNotLoaded(ctx.config.file, ctx.config.configDir, st) : null,
    needsRestart: st?.needsRestart ?? [],
    localDelivery: st?.localDelivery ? describeLocalDelivery(st.localDelivery, ctx.config.local.delivery === 'lmtp' ? ctx.config.local.lmtp : null) : null,
    secrets: st?.secrets ?? [],
    maildrop: drop.waiting,
    maildropSetAside: drop.setAside,
    maildropWait: st?.maildropWait ?? null,
    queue: st?.queue ?? queueSummary([]),
    byRoute: null,
    routes: st?.routes ?? [],
    fetch: st?.fetch ?? [],
    problems: [],
    alerts: st?.alerts ?? null,
  };
  try {
    if (!st) {
      if (db && canWrite(ctx.config.stateDir)) {
        const store = await ctx.openStore();
        try {
          report.queue = queueSummary(await store.listMessages());
        } finally {
          await store.close();
        }
      }
      const routes = withRelayRoutes(ctx.config, loadRoutes(ctx.config.configDir));
      const links = await probeLinks(routes, { tcp: false });
      report.routes = routes.map((r, i) => ({ name: r.name, target: describeTarget(r), online: links[i]!.online, why: links[i]!.why }));
      report.fetch = routes.flatMap((r) => r.fetch.map((f) => ({ account: f.name, route: r.name, lastRun: null, running: false, last: null })));
    }
    if (db) {
      report.byRoute = await byRouteAndState(db).catch(() => null);
      report.problems = await recentProblems(db, Date.now() - PROBLEM_WINDOW_MS).catch(() => []);
      const fetched = await lastFetched(db).catch(() => new Map<string, number>());
      for (const f of report.fetch) f.lastMessage = fetched.get(f.account);
      if (report.byRoute) {
        for (const r of report.routes) r.queued = Object.values(report.byRoute[r.name] ?? {}).reduce((a, b) => a + b, 0);
      }
    }
  } finally {
    await db?.close();
  }
  // lastError, why and problems hold remote servers' words: escaped (printable.ts).
  if (json) process.stdout.write(printableJson(report, 2) + '\n');
  else process.stdout.write(printableLines(format(report, st, maildropDir(ctx.config.stateDir))));
  return EX.OK;
}

function states(counts: Record<string, number> | undefined): string {
  if (!counts) return '';
  return Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([s, n]) => `${n} ${s}`).join(', ');
}

/** One line: who writes local mail (README "Privileges"). */
function describeLocalDelivery(l: NonNullable<DaemonStatus['localDelivery']>, lmtp: string | null): string {
  if (lmtp) return `mailboxes over LMTP (${lmtp}); the LMTP server writes as each user`;
  if (l.helperStopped) return `delivery helper STOPPED (${l.helperStopped}): local deliveries wait; restart tidemail`;
  if (l.helperPid !== null) return `written as each user by the delivery helper (pid ${l.helperPid}, root); the daemon runs as ${l.runsAs}`;
  return `written as ${l.runsAs} only: the daemon was not started as root, so other users' mail waits (start it as root)`;
}

function format(r: StatusReport, st: DaemonStatus | null, dropDir: string): string {
  const out: string[] = [];
  const pad = ''.padEnd(17);
  out.push(r.daemon.running
    ? `daemon:  running (pid ${r.daemon.pid}, up since ${new Date(r.daemon.since!).toISOString()}, ${ago(r.daemon.since!).replace(' ago', '')})`
    : 'daemon:  NOT running — nothing is received or sent (start it: tidemail daemon, or systemctl start tidemail)');
  out.push(`config:  ${r.config ?? 'embedded local-only default'}`);
  if (r.configNotLoaded) out.push(`         config on disk not loaded: ${r.configNotLoaded}`);
  if (r.needsRestart.length) out.push(`         changed settings need a restart (the listeners keep the old values): ${r.needsRestart.join(', ')}`);
  if (r.localDelivery) out.push(`local:   ${r.localDelivery}`);
  for (const x of r.secrets) out.push(`         secret ${x.file}: read ${ago(x.readAt)}${x.error ? `; rereading failed (${x.error}), the old value is used` : ''}`);
  const q = r.queue;
  out.push(`queue:   ${q.messages} message(s), ${q.recipients} recipient(s), ${q.held} on hold, ${Math.ceil(q.bytes / 1024)} KiB` +
    (q.oldest ? `, oldest ${ago(q.oldest)}` : ''));
  // One line per reason, recipients counted once: the lines add up to the total above.
  const reasons = Object.entries(q.reasons).sort((a, b) => b[1] - a[1]);
  for (const [why, n] of reasons.slice(0, 8)) out.push(`         ${String(n).padStart(5)} recipient(s): ${why}`);
  if (reasons.length > 8) out.push(`         ${String(reasons.slice(8).reduce((a, [, n]) => a + n, 0)).padStart(5)} recipient(s): ${reasons.length - 8} other reason(s) (mailq lists them)`);
  if (r.maildrop) out.push(`maildrop: ${r.maildrop} message(s) from sendmail wait for the daemon to take them${r.daemon.running ? '' : ' (it is not running)'}`);
  if (r.maildropWait) out.push(describeWait(r.maildropWait));
  if (r.maildropSetAside) {
    out.push(`maildrop: ${r.maildropSetAside} refused file(s) set aside as .bad-* in ${dropDir} (the daemon's log says why: "maildrop: refused"); removed after ${BAD_MAX_AGE_MS / 86_400_000} days`);
  }
  const known = new Set(r.routes.map((x) => x.name));
  for (const [route, counts] of Object.entries(r.byRoute ?? {})) {
    // Not routed yet is already among the reasons ("not tried yet"): counted once.
    if (known.has(route) || route === '') continue;
    const label = route === '' ? 'not routed yet' : route === '*' ? 'no online route' : route === 'local' ? 'local delivery' : `route ${route} (no longer configured)`;
    out.push(`         ${label}: ${states(counts)}`);
  }
  out.push(`routes:  ${r.routes.length ? '' : 'none (mail for other hosts waits; add a route under routes/)'}`);
  for (const x of r.routes) {
    const since = x.since ? ` since ${ago(x.since)}` : '';
    out.push(`  ${x.name.padEnd(14)} ${x.online ? 'ONLINE ' : 'offline'}${since}  ${x.target}`);
    // A link that looks up while deliveries fail: the failure beside the reason, with its age.
    const failing = x.online && x.lastError && x.lastErrorAt && (!x.since || x.lastErrorAt >= x.since);
    if (x.why) out.push(`${pad}why: ${x.why}${failing ? ` — but the last delivery failed ${ago(x.lastErrorAt!)}: ${printable(x.lastError!)}` : ''}`);
    const byState = states(r.byRoute?.[x.name]);
    const parts = [`${x.queued ?? 0} queued${byState ? ` (${byState})` : ''}`, ...(x.delivered ? [`${x.delivered} delivered`] : [])];
    out.push(`${pad}${parts.join(', ')}`);
    if (x.paused) out.push(`${pad}PAUSED: ${printable(x.paused)}`);
    if (x.lastError) out.push(`${pad}last error${x.lastErrorAt ? ` (${ago(x.lastErrorAt)})` : ''}: ${printable(x.lastError)}`);
  }
  if (st?.noRoute && !r.byRoute) out.push(`  ${String(st.noRoute).padStart(5)} recipient(s) wait for an online route`);
  if (r.fetch.length) {
    out.push('fetch:');
    for (const f of r.fetch) {
      const when = f.running ? 'running now' : f.lastRun ? `last run ${ago(f.lastRun)}` : r.daemon.running ? 'not run yet' : 'daemon not running';
      const what = f.last ? (f.last.error ? `FAILING: ${printable(f.last.error)}` : `${f.last.fetched} fetched`) : '';
      const msg = f.lastMessage ? `last message ${ago(f.lastMessage)}` : '';
      out.push(`  ${f.account.padEnd(20)} ${[when, what, msg].filter(Boolean).join(', ')}`);
    }
  }
  if (r.alerts && (r.alerts.last || r.alerts.active.length)) {
    out.push('alerts:');
    for (const a of r.alerts.active) out.push(`  FIRING ${a.kind} ${a.subject} since ${ago(a.since)}: ${a.message}`);
    const l = r.alerts.last;
    if (l) out.push(`  last: ${l.state} ${l.kind} ${l.subject} ${ago(l.at)} — ${l.results.map((x) => `${x.action} ${x.ok ? 'ok' : 'FAILED'} (${x.detail})`).join(', ')}`);
  }
  if (r.problems.length) {
    out.push('recent problems (tidemail log ID for the whole story):');
    for (const p of r.problems) out.push(`  ${ago(p.t).padStart(8)}  ${p.envId ?? p.msgid} ${p.event}  ${p.fields}`);
  }
  return out.join('\n') + '\n';
}
