// `tidemail config check|show`: validate the config and route files without starting anything.

import { UsageError } from '../errors.js';
import { loadConfig } from '../config/load.js';
import { formatDuration } from '../config/units.js';
import { loadRoutes } from '../routes/load.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

export async function runConfig(argv: string[]): Promise<number> {
  const args = [...argv];
  const path = takeConfigOption(args);
  const sub = args[0] ?? 'check';
  const config = loadConfig(path);
  const routes = loadRoutes(config.configDir);
  if (sub === 'check') {
    if (routes.some((r) => r.schedule)) new (await import('../schedule/cron.js')).RouteSchedules(() => undefined).validate(routes);
    // Each check validates its own [checks.NAME] options when it is built.
    const { allChecks, buildChecks } = await import('../checks/registry.js');
    const plan = await buildChecks(config, { isLocal: () => true });
    await Promise.all(allChecks(plan).map((c) => c.close?.().catch(() => undefined)));
    process.stdout.write(`${config.file ?? 'embedded default'}: ok (${routes.length} route(s))\n`);
    return EX.OK;
  }
  if (sub !== 'show') throw new UsageError(usageLine('config'));
  const q = config.queue;
  const shown = {
    ...config,
    queue: { retry_min: formatDuration(q.retryMinMs), retry_max: formatDuration(q.retryMaxMs), max_lifetime: formatDuration(q.maxLifetimeMs), delay_warning: formatDuration(q.delayWarningMs) },
    // Secrets never leave their files: show where they are, not what they are.
    routes: routes.map((r) => JSON.parse(JSON.stringify(r, (k, v) => (k === 'password' ? '(from file)' : v)))),
  };
  process.stdout.write(JSON.stringify(shown, null, 2) + '\n');
  return EX.OK;
}
