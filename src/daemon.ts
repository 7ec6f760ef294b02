// Builds every module and connects them; the only file that knows them all.

import fs from 'node:fs';
import { checkPinnedVersions } from './deps/pinned.js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/schema.js';
import { controlSocketPath, publicSocketPath } from './control/protocol.js';
import { controlCommands, type ConfigState, type ControlTarget } from './control/commands.js';
import { ControlServer } from './control/server.js';
import { DeliveryRunner } from './deliver/runner.js';
import { log, setLogLevel } from './log/log.js';
import { repeats } from './log/repeats.js';
import { maildropDir } from './queue/maildrop.js';
import { MaildropPickup, localSubmissionChecks } from './intake/pickup.js';
import { submitBounce } from './intake/bounce.js';
import type { IntakeTarget } from './intake/pipeline.js';
import { SqliteQueueStore } from './queue/sqlite.js';
import { loadRoutes } from './routes/load.js';
import { withRelayRoutes } from './relay/routes.js';
import { AlertMonitor } from './alerts/monitor.js';
import { daemonAlertSources } from './alerts/sources.js';
import { SmtpFront, fmt } from './smtp/server.js';
import { allChecks, buildChecks, type CheckPlan } from './checks/registry.js';
import { UsersStore } from './smtp/users-file.js';
import { chownTree, dropPrivileges, resolveRunUser } from './privileges.js';
import { checkReachable } from './startup-reachability.js';
import { createLocalLane, type LocalDelivery } from './deliver/local.js';
import { replies } from './smtp/replies.js';
import { localRecipientCheck } from './smtp/recipient-check.js';
import type { Spool } from './queue/store.js';
import { LinkMonitor } from './online/monitor.js';
import type { FetchSpec, RouteProfile } from './routes/profile.js';
import { rfc5322Date } from './message/date.js';
import { qualify } from './message/address.js';
import { setTokenStateDir } from './deliver/oauth2-token-store.js';
import type { DeliveryHelper } from './privsep/client.js';
import { currentUserName } from './local/users.js';

/** The store and the runner read one clock (tests of either step their own). */
const QUEUE_CLOCK = Date.now;

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
  private publicControl: ControlServer | null = null;
  private readonly configState: ConfigState = { loadedAt: Date.now(), reloadError: null, needsRestart: [] };
  private links!: LinkMonitor;
  private local!: LocalDelivery;
  /** The root helper that delivers as each local user (src/privsep); null when not started as root. */
  private helper: DeliveryHelper | null = null;
  private checks: CheckPlan | null = null;
  private schedules: import('./schedule/cron.js').RouteSchedules | null = null;
  private fetcher: import('./fetch/scheduler.js').FetchScheduler | null = null;
  private maildropTimer: NodeJS.Timeout | null = null;
  /** [alerts]: warnings outside mail (src/alerts). */
  private alerts: AlertMonitor | null = null;
  private maildropWatch: fs.FSWatcher | null = null;
  private readonly pickups = new MaildropPickup({
    config: () => this.config,
    checks: () => this.checks,
    store: { hasOrigin: (o) => this.store.hasOrigin(o) },
    target: this.intakeTarget(),
  });
  private readonly started = Date.now();

  /** The configuration the listeners were started with ([smtp] changes need a restart). */
  private readonly bootConfig: Config;

  private constructor(private config: Config, private readonly opts: DaemonOptions) {
    this.bootConfig = config;
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    checkPinnedVersions();
    const config = loadConfig(opts.configPath);
    setLogLevel(config.logLevel);
    const routes = withRelayRoutes(config, loadRoutes(config.configDir));
    const d = new Daemon(config, opts);
    await d.boot(routes);
    return d;
  }

  private async boot(routes: ReturnType<typeof loadRoutes>): Promise<void> {
    const { config } = this;
    const runAs = resolveRunUser(config.user, config.userWhere);
    // Queue files are private (0600); the state dir itself is traversable so that local users'
    // sendmail can reach the maildrop inside it (which is 1733: drop-only).
    process.umask(0o077);
    fs.mkdirSync(config.stateDir, { recursive: true });
    fs.chmodSync(config.stateDir, 0o755);
    const drop = maildropDir(config.stateDir);
    fs.mkdirSync(drop, { recursive: true });
    fs.chmodSync(drop, 0o1733);
    // Before binding anything: after the drop the run user must still reach our code and state.
    if (runAs) checkReachable(runAs, config.stateDir, config.file);

    // The delivery helper keeps root for writing as each user; forked before any port or input.
    // Imported here: a daemon not started as root never needs it (issue 17: idle memory).
    if (runAs) this.helper = await (await import('./privsep/client.js')).DeliveryHelper.start(config.local, runAs);
    else if (config.local.delivery !== 'lmtp') {
      log.warn(null, 'not started as root: local delivery writes with this user\'s rights, so only its own mailbox gets mail', { user: currentUserName(), uid: process.getuid?.(), fix: 'start the daemon as root to deliver to every local user' });
    }
    // Ports first (they may be privileged), then give up root before touching any input.
    this.local = createLocalLane(config, (m, a) => this.store.addRecipients(m, a), this.helper);
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

    this.store = await SqliteQueueStore.open(config.stateDir, QUEUE_CLOCK);
    setTokenStateDir(config.stateDir); // rotated OAuth2 refresh tokens (oauth2-token-store.ts)
    // Every log line with a queue id also goes into the queue database (`tidemail log`).
    (await import('./queue/events.js')).recordEvents(this.store.writer);
    this.links = new LinkMonitor(routes);
    this.runner = new DeliveryRunner(this.store, config, routes, (r) => this.links.isOnline(r), this.local, QUEUE_CLOCK);
    // Bounces enter through the intake like all mail, signed as our users' mail is (intake/bounce.ts).
    this.runner.queueNoticesWith((n) => submitBounce(this.intakeTarget(), { hostname: this.config.hostname, checks: localSubmissionChecks(this.checks) }, n));
    this.links.on('online:change', (route: RouteProfile, online: boolean) => {
      // Link down: its sessions are cut now, not when TCP gives up on a dead connection.
      if (!online) this.runner.interrupt(route.name, `link down on route ${route.name}`);
      else this.runner.resume(route.name);
      // Link up: everything waiting is due at once — not only what waited for this route: mail
      // whose preferred route is still down may go by this one (failover), so every waiting
      // envelope gets its route chosen again now rather than at no_route_recheck.
      // Mail deferred on this route (a connection cut by loss, a timeout on the last window) is
      // due again too: the link it failed on is back — what `postqueue -f` in ip-up does for
      // Postfix and masqmail's online run does. At most one retry per link-up.
      if (online) {
        const wake = () => this.runner.wake();
        void this.store.releaseWaiting(null).then(() => this.store.flushRoute(route.name)).then(wake, wake);
      }
      // …and its POP3 mailboxes are fetched.
      if (online) void this.fetcher?.fetchRoute(route.name);
    });
    await this.setFetch(routes);
    // Routes that are online from the start (always, or already up) fetch once at boot.
    for (const r of routes) if (r.fetch.length && this.links.isOnline(r)) void this.fetcher?.fetchRoute(r.name);
    this.links.start();
    await this.setSchedules(routes);
    // The admin socket gets every command; the public one (0666) what ordinary users may see.
    this.control = new ControlServer(controlSocketPath(config.stateDir), controlCommands(this.controlTarget(), { public: false }));
    await this.control.start();
    this.publicControl = new ControlServer(publicSocketPath(config.stateDir), controlCommands(this.controlTarget(), { public: true }), 0o666);
    await this.publicControl.start();
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
    this.alerts = new AlertMonitor(config.alerts, daemonAlertSources(this.controlTarget()), () => this.config.hostname);
    this.alerts.start();
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
    // that instant is told to come back rather than crashing the session. Until the runner
    // exists too: the commit asks it whether each recipient waits for a route (waitingAt).
    if (!this.store || !this.runner) throw replies.localError();
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
      // Recipients with no usable route are stored waiting (the runner decides at commit): a
      // pass is needed only for the others.
      waitingAt: (sender, rcpt) => d.runner.waitingAt(sender, rcpt),
      committed: (_id, meta, waiting) => {
        if (waiting < meta.recipients.length) d.runner.wake();
      },
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

  /** What the control commands (control/commands.ts) may use. */
  private controlTarget(): ControlTarget {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const d = this;
    return {
      get store() { return d.store; },
      get runner() { return d.runner; },
      get links() { return d.links; },
      get fetcher() { return d.fetcher; },
      get config() { return d.config; },
      started: this.started,
      configState: this.configState,
      pickup: () => this.pickup(),
      flushRoute: (name) => this.flushRoute(name),
      reload: () => this.reload(),
      get alerts() { return d.alerts; },
      get maildropWait() { return d.pickups.waiting; },
      get localDelivery() {
        return { helperPid: d.helper?.pid ?? null, helperStopped: d.helper?.stopped ?? null, runsAs: currentUserName() };
      },
    };
  }

  /**
   * SIGHUP: reload, or keep the old configuration and say why — in the log on one line (a
   * ConfigError's "fix:" line is a field, not a literal \n) and in `status` until it loads.
   */
  reloadOnSignal(): void {
    this.reload().catch((err: Error) => {
      const [problem, fix] = splitFix(err.message);
      log.error(null, 'reload failed, keeping the old configuration', { error: problem, fix });
    });
  }

  async reload(): Promise<void> {
    try {
      await this.reloadNow();
    } catch (err) {
      this.configState.reloadError = { at: Date.now(), message: (err as Error).message };
      throw err;
    }
  }

  private async reloadNow(): Promise<void> {
    const config = loadConfig(this.opts.configPath);
    const routes = withRelayRoutes(config, loadRoutes(config.configDir));
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
    Object.assign(this.local, createLocalLane(config, (m, a) => this.store.addRecipients(m, a), this.helper));
    this.links.setRoutes(routes);
    await this.runner.reconfigure(config, routes);
    this.alerts?.start(config.alerts);
    // The listeners keep the [smtp] settings they were started with (only checks and the
    // certificate are swapped): say which changed ones wait for a restart, here and in status.
    const restart = smtpRestartSettings(this.bootConfig, config);
    // The delivery helper's rules were fixed when it was forked as root.
    // The run user (spoolAs) is the helper's from its start, not from [local]: compared without it.
    const { spoolAs: _runUser, ...helperLocal } = this.helper?.settings ?? {};
    if (this.helper && JSON.stringify((await import('./privsep/client.js')).helperSettings(config.local)) !== JSON.stringify(helperLocal)) restart.push('local.min_uid/mbox/mda (delivery helper)');
    this.configState.loadedAt = Date.now();
    this.configState.reloadError = null;
    this.configState.needsRestart = restart;
    log.info(null, 'configuration reloaded', { routes: routes.map((r) => r.name).join(',') || 'none' });
    if (restart.length) log.warn(null, 'changed settings need a restart to take effect (the running listeners keep the old values)', { settings: restart.join(','), fix: 'restart the daemon (systemctl restart tidemail)' });
  }

  async stop(): Promise<void> {
    if (this.maildropTimer) clearInterval(this.maildropTimer);
    this.maildropWatch?.close();
    await this.front.close();
    if (this.checks) await Promise.all(allChecks(this.checks).map((c) => c.close?.().catch(() => undefined)));
    await this.control.close();
    await this.publicControl?.close();
    this.links.stop();
    this.schedules?.stop();
    await this.alerts?.stop();
    await this.runner.stop();
    this.fetcher?.stop();
    await this.fetcher?.idle();
    await this.closeFetch?.();
    this.pickups.stop();
    await this.pickups.idle();
    await this.store.close();
    this.helper?.stop();
    repeats.flush(); // repeated lines held back (log/repeats.ts) are counted, not lost
    log.always('daemon stopped');
  }
}

/** "problem\n  fix: text" (ConfigError) as [problem, fix]. */
function splitFix(text: string): [string, string | undefined] {
  const m = /^([\s\S]*?)\n\s*fix: ([\s\S]*)$/.exec(text);
  return m ? [m[1]!.replace(/\s*\n\s*/g, ' '), m[2]!.replace(/\s*\n\s*/g, ' ')] : [text.replace(/\s*\n\s*/g, ' '), undefined];
}

/** [smtp] settings that differ between the listeners' configuration and a reloaded one. */
function smtpRestartSettings(boot: Config, now: Config): string[] {
  // Applied by a reload: the certificate pair (SmtpFront.reloadTls); internal bookkeeping.
  const applied = new Set(['tlsCert', 'tlsKey', 'usersFileWhere']);
  const a = boot.smtp as unknown as Record<string, unknown>;
  const b = now.smtp as unknown as Record<string, unknown>;
  const out: string[] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (applied.has(k) || JSON.stringify(a[k]) === JSON.stringify(b[k])) continue;
    const toml = k.replace(/Ms$/, '').replace(/[A-Z]/g, (c) => '_' + c.toLowerCase());
    out.push(k === 'senders' ? '[smtp.senders]' : `smtp.${toml}`);
  }
  return out;
}
