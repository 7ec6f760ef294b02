// What the daemon answers on its control sockets. The admin socket (control.sock, 0600 for the
// daemon's user; root can always connect) gets every command. The public socket
// (control-public.sock, 0666) gets only what an ordinary user may see, as Postfix shows mailq to
// everyone: the queue's envelopes (no content), the status screen without secret files and config
// errors, and the history of the user's own messages — the user proven by a file they create in
// the maildrop (control/peer.ts), since Node cannot read SO_PEERCRED.

import { log } from '../log/log.js';
import { PermissionError, type ControlRequest } from './protocol.js';
import type { Queue } from '../queue/admin.js';
import type { DeliveryRunner } from '../deliver/runner.js';
import type { LinkMonitor } from '../online/monitor.js';
import type { FetchScheduler } from '../fetch/scheduler.js';
import type { Config } from '../config/schema.js';
import { queueSummary } from '../queue/summary.js';
import { describeTarget } from '../routes/profile.js';
import { secretReads } from '../config/secret-file.js';
import { provenUid } from './peer.js';
import { readHistories } from '../queue/events.js';

/** What the daemon knows about its configuration on disk versus the one it runs. */
export interface ConfigState {
  /** When the running configuration was read. */
  loadedAt: number;
  /** The last reload failed (SIGHUP or `tidemail reload`): why, with file:line. */
  reloadError: { at: number; message: string } | null;
  /** Settings a reload read but cannot apply to running listeners: they need a restart. */
  needsRestart: string[];
}

/** The parts of the daemon the commands use. */
export interface ControlTarget {
  /** Storage and its administration (hold, requeue, remove). */
  readonly store: Queue;
  readonly runner: DeliveryRunner;
  readonly links: LinkMonitor;
  readonly fetcher: FetchScheduler | null;
  readonly config: Config;
  readonly started: number;
  readonly configState: ConfigState;
  pickup(): Promise<void>;
  flushRoute(name: string): Promise<number>;
  reload(): Promise<void>;
  /** How local mail is written: by the root delivery helper (src/privsep), or with the daemon's rights. */
  readonly localDelivery: { helperPid: number | null; helperStopped: string | null; runsAs: string };
  /** [alerts] monitor: the last alert and what is firing (null before boot ends). */
  readonly alerts: import('../alerts/monitor.js').AlertMonitor | null;
  /** Set while the maildrop pickup waits for free space (queue/maildrop-space.ts). */
  readonly maildropWait?: import('../queue/maildrop-space.js').PickupWait | null;
}

/** A request on the public socket: read-only, and filtered to what anyone may see. */
const PUBLIC = new Set(['ping', 'list', 'status', 'history']);

export function isPublicCommand(cmd: string): boolean {
  return PUBLIC.has(cmd);
}

/** "requested by root (sudo alice)": who asked, as the client says (only admins reach it). */
function who(req: { by?: string }): string {
  return typeof req.by === 'string' && req.by ? req.by.slice(0, 64) : 'unknown';
}

export function controlCommands(d: ControlTarget, opts: { public: boolean }): (req: ControlRequest) => Promise<unknown> {
  return async (req) => {
    if (opts.public && !isPublicCommand(req.cmd)) throw new PermissionError(`"${req.cmd}" needs root or the daemon's user`);
    switch (req.cmd) {
      case 'ping':
        return { pid: process.pid };
      case 'poke':
        await d.pickup();
        return true;
      case 'flush': {
        await d.pickup();
        if (req.route) {
          if (!d.runner.getRoutes().some((r) => r.name === req.route)) throw new Error(`no route named "${req.route}"`);
          return { requeued: await d.flushRoute(req.route) };
        }
        const n = await d.store.requeue(null);
        d.runner.wake();
        return { requeued: n };
      }
      case 'list':
        return d.store.listMessages();
      case 'show':
        return (await d.store.getMessage(req.id)) ?? null;
      // Admin actions go into the message's history (`tidemail log ID`): who, and when.
      case 'remove': {
        const ok = await d.store.removeMessage(req.id);
        if (ok) log.info(req.id, 'removed by admin', { by: who(req) });
        return ok;
      }
      case 'hold': {
        const n = await d.store.hold(req.id);
        if (n) log.info(req.id, 'held by admin', { by: who(req), recipients: n });
        return n;
      }
      case 'release': // released mail is due now, not at a retry time from before the hold
      case 'requeue': {
        const n = await d.store.requeue(req.id);
        if (n) log.info(req.id, `${req.cmd === 'release' ? 'released' : 'requeued'} by admin`, { by: who(req), recipients: n });
        d.runner.wake();
        return n;
      }
      case 'status':
        return status(d, opts.public);
      case 'history': {
        // Only the messages this user submitted (their sendmail's uid in the `accepted` event),
        // without what happened at a local recipient's end (queue/sender-view.ts). Selected in
        // the query: a limit taken over everyone's events left a busy queue's users nothing.
        const uid = provenUid(d.config.stateDir, req.proof);
        return { uid, histories: await readHistories(d.config.stateDir, { id: req.id, address: req.address, since: req.since, uid }) };
      }
      case 'fetch':
        if (!d.fetcher) throw new Error('no route has [[fetch]] accounts');
        return d.fetcher.fetchNow(req.account);
      case 'link': {
        const matched = await d.links.linkEvent(req.name, req.up);
        if (!matched.length) throw new Error(`no route or interface named "${req.name}" (routes: ${d.links.routeNames().join(', ') || 'none'})`);
        return { matched, states: d.links.states() };
      }
      case 'reload':
        await d.reload();
        return true;
      default:
        throw new Error(`unknown command ${(req as { cmd: string }).cmd}`);
    }
  };
}


async function status(d: ControlTarget, isPublic: boolean): Promise<unknown> {
  const counts = await d.store.countByRoute();
  const links = new Map(d.links.states().map((s) => [s.route, s]));
  const cs = d.configState;
  return {
    pid: process.pid,
    since: d.started,
    config: d.config.file,
    queue: queueSummary(await d.store.listMessages()),
    noRoute: counts['*'] ?? 0,
    maildropWait: d.maildropWait ?? null,
    fetch: d.fetcher?.states() ?? [],
    routes: d.runner.getRoutes().map((r) => ({
      name: r.name,
      target: describeTarget(r),
      online: links.get(r.name)?.online ?? false,
      since: links.get(r.name)?.since,
      why: links.get(r.name)?.why,
      queued: counts[r.name] ?? 0,
      ...d.runner.routeState.get(r.name),
    })),
    // Secret paths and config errors (which may quote a line of the file) are for admins only.
    ...(isPublic ? {} : { loadedAt: cs.loadedAt, reloadError: cs.reloadError, needsRestart: cs.needsRestart, localDelivery: d.localDelivery, secrets: secretReads(), alerts: d.alerts && { last: d.alerts.last, active: d.alerts.active() } }),
  };
}
