// Route schedules (`schedule = "*/30 * * * *"`): extra flush times on top of link events, e.g.
// for a dial-up link that should be used twice a day. node-cron is loaded only when a route
// has a schedule. Retries never use cron: they are plain timers in the runner.

import cron from 'node-cron';
import { ConfigError } from '../errors.js';
import { lineOfKey } from '../config/reader.js';
import fs from 'node:fs';
import { log } from '../log/log.js';
import type { RouteProfile } from '../routes/profile.js';

export class RouteSchedules {
  private tasks: { stop(): unknown }[] = [];

  constructor(private readonly onTick: (route: RouteProfile) => void) {}

  /** Throws a ConfigError (file:line and the fix) for the first invalid schedule. */
  validate(routes: readonly RouteProfile[]): void {
    for (const r of routes) {
      if (r.schedule && !cron.validate(r.schedule)) {
        const line = lineOfKey(fs.readFileSync(r.file, 'utf8'), ['schedule']);
        throw new ConfigError(`${r.file}${line ? `:${line}` : ''}: 'schedule' "${r.schedule}" is not a valid cron expression\n  fix: five fields: minute hour day-of-month month day-of-week, e.g. "*/30 * * * *" or "0 7,19 * * *"`);
      }
    }
  }

  /** Validates every schedule first, then replaces the running tasks. */
  set(routes: readonly RouteProfile[]): void {
    this.validate(routes);
    this.stop();
    for (const r of routes) {
      if (!r.schedule) continue;
      this.tasks.push(cron.schedule(r.schedule, () => {
        log.info(null, 'scheduled flush', { route: r.name });
        this.onTick(r);
      }, { name: `route-${r.name}` }));
    }
  }

  stop(): void {
    for (const t of this.tasks) t.stop();
    this.tasks = [];
  }
}
