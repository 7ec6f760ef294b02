// Builds every module and connects them; the only file that knows them all.

import fs from 'node:fs';
import { checkPinnedVersions } from './deps/pinned.js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { controlSocketPath, type ControlRequest } from './control/protocol.js';
import { ControlServer } from './control/server.js';
import { DeliveryRunner } from './deliver/runner.js';
import { log, setLogLevel } from './log/log.js';
import { maildropDir } from './queue/maildrop.js';
import { MaildropPickup } from './intake/pickup.js';
import type { IntakeTarget } from './intake/pipeline.js';
import { SqliteQueueStore } from './queue/sqlite.js';
import { loadRoutes } from './routes/load.js';
import { describeTarget } from './routes/profile.js';
import { SmtpFront, fmt } from './smtp/server.js';
import { allChecks, buildChecks, type CheckPlan } from './checks/registry.js';
import { UsersStore } from './smtp/users-file.js';
import { chownTree, dropPrivileges, resolveRunUser } from './privileges.js';
import { checkReachable } from './startup-reachability.js';
import { queueSummary } from './queue/summary.js';
import { createLocalLane, type LocalDelivery } from './deliver/local.js';
import { replies } from './smtp/replies.js';
import { localRecipientCheck } from './smtp/recipient-check.js';
import type { Spool } from './queue/store.js';
import { LinkMonitor } from './online/monitor.js';
import type { FetchSpec, RouteProfile } from './routes/profile.js';
import { rfc5322Date } from './message/date.js';
import { qualify } from './message/address.js';
import { setTokenStateDir } from './deliver/oauth2-token-store.js';

/** Safety net for a missed poke or inotify event: look at the maildrop at least this often. */
const MAILDROP_SCAN_MS = 60_000;

export interface DaemonOptions {
  configPath?: string;
}

export class Daemon {
  private store!: SqliteQueueStore;
  private runner!: DeliveryRunner;
  private front!: SmtpFront;
  private control!: ControlServer;
  private links!: LinkMonitor;
  private local!: LocalDelivery;
  private checks: CheckPlan | null = null;
  private schedules: import('./schedule/cron.js').RouteSchedules | null = null;
  private fetcher: import('./fetch/scheduler.js').FetchScheduler | null = null;
  private maildropTimer: NodeJS.Timeout | null = null;
  private maildropWatch: fs.FSWatcher | null = null;
  private readonly pickups = new MaildropPickup({
    config: () => this.config,
    checks: () => this.checks,
    store: { openMessage: () => this.openMessage(), hasOrigin: (o) => this.store.hasOrigin(o) },
    target: this.intakeTarget(),
  });
  private readonly started = Date.now();

  private constructor(private config: Config, private readonly opts: DaemonOptions) {}

  static async start(opts: DaemonOptions): Promise<Daemon> {
    checkPinnedVersions();
    const config = loadConfig(opts.configPath);
    setLogLevel(config.logLevel);
    const routes = loadRoutes(config.configDir);
    const d = new Daemon(config, opts);
    await d.boot(routes);
    return d;
  }

  private async boot(routes: ReturnType<typeof loadRoutes>): Promise<void> {
    const { config } = this;
    const runAs = resolveRunUser(config.user);
    // Queue files are private (0600); the state dir itself is traversable so that local users'
    // sendmail can reach the maildrop inside it (which is 1733: drop-only).
    process.umask(0o077);
    fs.mkdirSync(config.stateDir, { recursive: true });
    fs.chmodSync(config.stateDir, 0o755);
    const drop = maildropDir(config.stateDir);
    fs.mkdirSync(drop, { recursive: true });
    fs.chmodSync(drop, 0o1733);
    // Before binding anything: after the drop the run user must still reach our code and state.
    if (runAs) checkReachable(runAs, config.stateDir, config.configDir);

    // Ports first (they may be privileged), then give up root before touching any input.
    this.local = createLocalLane(config, (m, a) => this.store.addRecipients(m, a));
    // The users file, the TLS key and check keys (DKIM) are read now, while we may still be root.
    const users = new UsersStore(config.smtp.usersFile, config.smtp.usersFileWhere);
    this.checks = await buildChecks(config, {
      isLocal: (a) => this.local.isLocal(a),
      checkRecipient: (a) => this.checkLocalRecipient(a),
    });
    // After the checks: state they created (the greylist database) must belong to the run user.
    if (runAs) chownTree(config.stateDir, runAs);
    this.front = new SmtpFront({
      config,
      via: 'smtp',
      users,
      checks: this.checks,
      isLocal: (a) => this.local.isLocal(a),
      checkRecipient: (a) => this.checkLocalRecipient(a),
      sink: this.intakeTarget({
        // Deliver, then answer — only when there is something local to deliver.
        afterCommit: async (id, meta) => (meta.recipients.some((r) => this.local.isLocal(r)) ? this.runner.deliverNow(id, this.config.local.preQueueDeadlineMs) : null),
      }),
    });
    await this.front.listen(config.smtp.listen, 'mx');
    await this.front.listen(config.smtp.submission, 'submission');
    await this.front.listen(config.smtp.smtps, 'smtps');
    if (runAs) dropPrivileges(runAs);

    this.store = await SqliteQueueStore.open(config.stateDir);
    setTokenStateDir(config.stateDir); // rotated OAuth2 refresh tokens (oauth2-token-store.ts)
    // Every log line with a queue id also goes into the queue database (`tidemail log`).
    (await import('./queue/events.js')).recordEvents(this.store.writer);
    this.links = new LinkMonitor(routes);
    this.runner = new DeliveryRunner(this.store, config, routes, (r) => this.links.isOnline(r), this.local);
    this.links.on('online:change', (route: RouteProfile, online: boolean) => {
      // The moment a link comes up, everything waiting for it is due — not at the next tick.
      if (online) void this.store.releaseWaiting(route.name).then(() => this.runner.wake(), () => this.runner.wake());
      // …and its POP3 mailboxes are fetched.
      if (online) void this.fetcher?.fetchRoute(route.name);
    });
    await this.setFetch(routes);
    // Routes that are online from the start (always, or already up) fetch once at boot.
    for (const r of routes) if (r.fetch.length && this.links.isOnline(r)) void this.fetcher?.fetchRoute(r.name);
    this.links.start();
    await this.setSchedules(routes);
    this.control = new ControlServer(controlSocketPath(config.stateDir), (req) => this.handleControl(req));
    await this.control.start();
    await this.pickup();
    this.maildropTimer = setInterval(() => void this.pickup(), MAILDROP_SCAN_MS);
    this.maildropTimer.unref();
    // Ordinary users cannot reach the control socket to poke us; inotify tells us instead.
    try {
      this.maildropWatch = fs.watch(maildropDir(config.stateDir), (_ev, name) => {
        if (name && !name.startsWith('.')) void this.pickup();
      });
      this.maildropWatch.on('error', () => undefined);
    } catch {
      /* no inotify: pokes and the scan still work */
    }
    this.runner.wake();
    log.always('daemon ready', {
      listen: config.smtp.listen.map(fmt).join(','),
      ...(config.smtp.submission.length ? { submission: config.smtp.submission.map(fmt).join(',') } : {}),
      ...(config.smtp.smtps.length ? { smtps: config.smtp.smtps.map(fmt).join(',') } : {}),
      state: config.stateDir,
      config: config.file ?? 'embedded local-only default',
      routes: routes.map((r) => r.name).join(',') || 'none',
    });
  }

  /** RCPT-time answer for a local address: unknown users are refused while the client waits. */
  private checkLocalRecipient(address: string): Promise<Error | null> {
    return localRecipientCheck(this.local.resolver)(address);
  }

  private openMessage(): Spool {
    // Listeners are bound before the queue opens (ports first, then drop root): a message in
    // that instant is told to come back rather than crashing the session.
    if (!this.store) throw replies.localError();
    return this.store.openMessage();
  }

  /** Where every intake source (SMTP, fetch, pickup) queues; settings read per message, so a reload applies. */
  private intakeTarget(extra: Pick<IntakeTarget, 'afterCommit'> = {}): IntakeTarget {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const d = this;
    return {
      openMessage: () => d.openMessage(),
      get archive() { return d.config.local.archive; },
      get checkTimeoutMs() { return d.config.checks.timeoutMs; },
      committed: () => d.runner.wake(),
      ...extra,
    };
  }

  /** Starts cron tasks for routes with a `schedule` (node-cron is loaded only then). */
  private async setSchedules(routes: readonly RouteProfile[]): Promise<void> {
    if (!this.schedules && !routes.some((r) => r.schedule)) return;
    if (!this.schedules) {
      const { RouteSchedules } = await import('./schedule/cron.js');
      this.schedules = new RouteSchedules((r) => {
        void this.flushRoute(r.name);
        void this.fetcher?.fetchRoute(r.name);
      });
    }
    this.schedules.set(routes);
  }

  /** POP3 fetching, loaded only when some route has [[fetch]] accounts. */
  private async setFetch(routes: readonly RouteProfile[]): Promise<void> {
    if (!this.fetcher && !routes.some((r) => r.fetch.length)) return;
    if (!this.fetcher) {
      const [{ FetchScheduler }, { UidlStore }] = await Promise.all([import('./fetch/scheduler.js'), import('./fetch/uidl-store.js')]);
      const uidls = await UidlStore.open(this.config.stateDir);
      this.fetcher = new FetchScheduler(uidls, (r) => this.links.isOnline(r), (a, body, env) => this.submitFetched(a, body, env), () => this.config.smtp.maxMessageSize);
      this.closeFetch = () => uidls.close();
    }
    this.fetcher.setRoutes(routes);
  }

  private closeFetch: (() => Promise<void>) | null = null;

  /** A fetched message enters the queue like any other (src/fetch/submit.ts). */
  private async submitFetched(a: FetchSpec, body: AsyncIterable<Buffer>, env: { recipients: string[]; from?: string }): Promise<void> {
    const { submitFetched } = await import('./fetch/submit.js');
    await submitFetched({ ...this.intakeTarget(), hostname: this.config.hostname, checks: this.checks }, a, body, env);
  }

  private async flushRoute(name: string): Promise<number> {
    const n = await this.store.flushRoute(name);
    this.runner.wake();
    return n;
  }

  /** Imports maildrop files (src/intake/pickup.ts); concurrent pokes coalesce into one more scan. */
  pickup(): Promise<void> {
    return this.pickups.run();
  }

  async reload(): Promise<void> {
    const config = loadConfig(this.opts.configPath);
    const routes = loadRoutes(config.configDir);
    setLogLevel(config.logLevel);
    await this.setSchedules(routes); // first: an invalid schedule keeps the old configuration
    // New checks before anything is swapped: a bad [checks.NAME] option keeps the old configuration.
    const checks = await buildChecks(config, { isLocal: (a) => this.local.isLocal(a), checkRecipient: (a) => this.checkLocalRecipient(a) });
    await this.setFetch(routes);
    const oldChecks = this.checks;
    this.checks = checks;
    this.front.setChecks(checks);
    this.front.reloadTls(config);
    // Checks the new plan still uses are fresh instances; close the old ones once sessions moved on.
    if (oldChecks) setTimeout(() => void Promise.all(allChecks(oldChecks).map((c) => c.close?.().catch(() => undefined))), 60_000).unref();
    this.config = config;
    Object.assign(this.local, createLocalLane(config, (m, a) => this.store.addRecipients(m, a)));
    this.links.setRoutes(routes);
    await this.runner.reconfigure(config, routes);
    log.info(null, 'configuration reloaded', { routes: routes.map((r) => r.name).join(',') || 'none' });
  }

  private async handleControl(req: ControlRequest): Promise<unknown> {
    switch (req.cmd) {
      case 'ping':
        return { pid: process.pid };
      case 'poke':
        await this.pickup();
        return true;
      case 'flush': {
        await this.pickup();
        if (req.route) {
          if (!this.runner.getRoutes().some((r) => r.name === req.route)) throw new Error(`no route named "${req.route}"`);
          return { requeued: await this.flushRoute(req.route) };
        }
        const n = await this.store.requeue(null);
        this.runner.wake();
        return { requeued: n };
      }
      case 'list':
        return this.store.listMessages();
      case 'show':
        return (await this.store.getMessage(req.id)) ?? null;
      case 'remove':
        return this.store.removeMessage(req.id);
      case 'hold':
        return this.store.setStatus(req.id, 'hold');
      case 'release': // released mail is due now, not at a retry time from before the hold
      case 'requeue': {
        const n = await this.store.requeue(req.id);
        this.runner.wake();
        return n;
      }
      case 'status': {
        const counts = await this.store.countByRoute();
        const links = new Map(this.links.states().map((s) => [s.route, s]));
        return {
          pid: process.pid,
          since: this.started,
          config: this.config.file,
          queue: queueSummary(await this.store.listMessages()),
          noRoute: counts['*'] ?? 0,
          fetch: this.fetcher?.states() ?? [],
          routes: this.runner.getRoutes().map((r) => ({
            name: r.name,
            target: describeTarget(r),
            online: links.get(r.name)?.online ?? false,
            since: links.get(r.name)?.since,
            why: links.get(r.name)?.why,
            queued: counts[r.name] ?? 0,
            ...this.runner.routeState.get(r.name),
          })),
        };
      }
      case 'fetch':
        if (!this.fetcher) throw new Error('no route has [[fetch]] accounts');
        return this.fetcher.fetchNow(req.account);
      case 'link': {
        const matched = await this.links.linkEvent(req.name, req.up);
        if (!matched.length) throw new Error(`no route or interface named "${req.name}" (routes: ${this.links.routeNames().join(', ') || 'none'})`);
        return { matched, states: this.links.states() };
      }
      case 'reload':
        await this.reload();
        return true;
      default:
        throw new Error(`unknown command ${(req as { cmd: string }).cmd}`);
    }
  }

  async stop(): Promise<void> {
    if (this.maildropTimer) clearInterval(this.maildropTimer);
    this.maildropWatch?.close();
    await this.front.close();
    if (this.checks) await Promise.all(allChecks(this.checks).map((c) => c.close?.().catch(() => undefined)));
    await this.control.close();
    this.links.stop();
    this.schedules?.stop();
    await this.runner.stop();
    this.fetcher?.stop();
    await this.fetcher?.idle();
    await this.closeFetch?.();
    await this.pickups.idle();
    await this.store.close();
    log.always('daemon stopped');
  }
}
