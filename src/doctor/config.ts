// Probe: the configuration loads — main file, route files, every configured check's options,
// route schedules — exactly as `tidemail config check` and the daemon read them.

import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { loadRoutes } from '../routes/load.js';
import { withRelayRoutes } from '../relay/routes.js';
import type { RouteProfile } from '../routes/profile.js';
import { fail, ok, type Finding } from './finding.js';

export interface LoadedConfig {
  config: Config;
  routes: RouteProfile[];
}

export async function probeConfig(configPath?: string): Promise<{ findings: Finding[]; loaded: LoadedConfig | null }> {
  try {
    const config = loadConfig(configPath);
    const routes = withRelayRoutes(config, loadRoutes(config.configDir));
    if (routes.some((r) => r.schedule)) new (await import('../schedule/cron.js')).RouteSchedules(() => undefined).validate(routes);
    const { allChecks, buildChecks } = await import('../checks/registry.js');
    const plan = await buildChecks(config, { isLocal: () => true });
    await Promise.all(allChecks(plan).map((c) => c.close?.().catch(() => undefined)));
    const what = config.file ?? 'embedded local-only default (no config file)';
    return { findings: [ok('config', `${what}: valid, ${routes.length} route(s)`)], loaded: { config, routes } };
  } catch (err) {
    const text = (err as Error).message;
    // ConfigError text is "file:line:col: problem\n  fix: …": split it into our two lines.
    const m = /^([\s\S]*?)\n\s*fix: ([\s\S]*)$/.exec(text);
    return { findings: [fail('config', m ? m[1]! : text, m ? m[2]! : 'correct the file named above; `tidemail config check` says the same')], loaded: null };
  }
}
