// The link monitor: one state per route, from its detectors (all must agree), overridden by
// `tidemail link up|down ROUTE` until a detector changes its mind. Emits `online:change`.

import { EventEmitter } from 'node:events';
import { log } from '../log/log.js';
import { parseHostPort } from '../routes/load.js';
import type { RouteProfile } from '../routes/profile.js';
import { CommandDetector } from './command.js';
import type { Detector } from './detector.js';
import { FileDetector } from './file.js';
import { InterfaceDetector } from './netif.js';
import { TcpDetector } from './tcp.js';

export interface RouteLinkState {
  route: string;
  online: boolean;
  since: number;
  /** Why: the detectors' answers, or the manual override. */
  why: string;
}

interface Tracked {
  route: RouteProfile;
  detectors: Detector[];
  tcp: TcpDetector | null;
  manual: boolean | null;
  online: boolean;
  since: number;
}

export class LinkMonitor extends EventEmitter {
  private tracked = new Map<string, Tracked>();
  private started = false;

  constructor(routes: readonly RouteProfile[]) {
    super();
    this.setRoutes(routes);
  }

  /** (Re)builds detectors for a new set of routes, keeping state of unchanged routes. */
  setRoutes(routes: readonly RouteProfile[]): void {
    const old = this.tracked;
    this.tracked = new Map();
    for (const route of routes) {
      const prev = old.get(route.name);
      if (prev && JSON.stringify(prev.route.online) === JSON.stringify(route.online) && prev.route.kind === route.kind) {
        prev.route = route;
        this.tracked.set(route.name, prev);
        old.delete(route.name);
        continue;
      }
      const t = this.track(route);
      this.tracked.set(route.name, t);
      if (this.started) this.startTracked(t);
    }
    for (const t of old.values()) {
      t.detectors.forEach((d) => d.stop());
      t.tcp?.stop();
    }
  }

  private track(route: RouteProfile): Tracked {
    const o = route.online;
    const detectors: Detector[] = [];
    if (!o.always) {
      if (o.file) detectors.push(new FileDetector(o.file));
      if (o.interface) detectors.push(new InterfaceDetector(o.interface));
      if (o.command) detectors.push(new CommandDetector(o.command, o.intervalMs));
    }
    let tcp: TcpDetector | null = null;
    if (!o.always && o.tcp) {
      const hp = parseHostPort(o.tcp, 25)!;
      tcp = new TcpDetector(hp.host, hp.port, o.intervalMs);
    }
    const t: Tracked = { route, detectors, tcp, manual: null, online: false, since: Date.now() };
    t.online = this.evaluate(t);
    if (tcp) tcp.gate = () => t.detectors.every((d) => d.up === true);
    return t;
  }

  start(): void {
    this.started = true;
    for (const t of this.tracked.values()) this.startTracked(t);
  }

  private startTracked(t: Tracked): void {
    const changed = () => {
      t.manual = null; // a detector changed its mind: it wins over an old hook call
      void this.update(t);
    };
    t.detectors.forEach((d) => d.start(changed));
    t.tcp?.start(() => void this.update(t));
    // With no other detector nothing would call update before the first interval: probe now.
    if (t.tcp && t.detectors.length === 0) void this.update(t);
  }

  stop(): void {
    this.started = false;
    for (const t of this.tracked.values()) {
      t.detectors.forEach((d) => d.stop());
      t.tcp?.stop();
    }
  }

  private evaluate(t: Tracked): boolean {
    if (t.route.kind === 'local-only') return false;
    if (t.manual !== null) return t.manual;
    if (t.route.online.always) return true;
    if (!t.detectors.every((d) => d.up === true)) return false;
    return t.tcp ? t.tcp.up === true : true;
  }

  private async update(t: Tracked): Promise<void> {
    const base = t.detectors.every((d) => d.up === true);
    if (t.tcp) {
      if (base && t.manual === null && t.tcp.up !== true) await t.tcp.recheck();
      else if (!base) t.tcp.markDown('link is down; not probed');
    }
    const online = this.evaluate(t);
    if (online === t.online) return;
    t.online = online;
    t.since = Date.now();
    log.info(null, online ? 'link up' : 'link down', { route: t.route.name, why: this.why(t) });
    this.emit('online:change', t.route, online);
  }

  isOnline(route: RouteProfile | string): boolean {
    const t = this.tracked.get(typeof route === 'string' ? route : route.name);
    return t ? t.online : false;
  }

  private why(t: Tracked): string {
    if (t.route.kind === 'local-only') return 'local-only route';
    if (t.manual !== null) return `set ${t.manual ? 'up' : 'down'} by \`tidemail link\``;
    if (t.route.online.always) return 'always online';
    const parts = [...t.detectors, ...(t.tcp ? [t.tcp] : [])].map((d) => `${d.label}: ${d.detail}`);
    return parts.join('; ');
  }

  states(): RouteLinkState[] {
    return [...this.tracked.values()].map((t) => ({ route: t.route.name, online: t.online, since: t.since, why: this.why(t) }));
  }

  /**
   * A hook says NAME went up or down. NAME may be a route (manual override until a detector
   * changes) or an interface (re-check every route watching it now). Returns what matched.
   */
  async linkEvent(name: string, up: boolean): Promise<string[]> {
    const matched: string[] = [];
    const route = this.tracked.get(name);
    if (route) {
      route.manual = up;
      matched.push(`route ${name}`);
      await this.update(route);
    }
    for (const t of this.tracked.values()) {
      if (t.route.online.interface !== name) continue;
      matched.push(`route ${t.route.name} (interface ${name})`);
      await Promise.all(t.detectors.map((d) => d.recheck()));
      await this.update(t);
    }
    return matched;
  }

  routeNames(): string[] {
    return [...this.tracked.keys()];
  }
}
