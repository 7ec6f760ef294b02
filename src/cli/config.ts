// `tidemail config check|show`: validate the config and route files without starting anything.

import { UsageError } from '../errors.js';
import { BUILT_IN, loadConfig } from '../config/load.js';
import { ConfigReader, type ReadLog, type SettingRead } from '../config/reader.js';
import type { Config } from '../config/schema.js';
import type { RouteProfile } from '../routes/profile.js';
import { loadRoutes } from '../routes/load.js';
import { withRelayRoutes } from '../relay/routes.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

export async function runConfig(argv: string[]): Promise<number> {
  const args = [...argv];
  const path = takeConfigOption(args);
  const sub = args[0] ?? 'check';
  // Every file's readers report what they read, with the value used and where it came from.
  const files: { file: string; log: ReadLog }[] = [];
  ConfigReader.collecting = sub === 'show' ? files : null;
  let config: Config;
  let routes: RouteProfile[];
  try {
    config = loadConfig(path);
    routes = withRelayRoutes(config, loadRoutes(config.configDir));
  } finally {
    ConfigReader.collecting = null;
  }
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
  if (args.includes('--json')) {
    // For scripts: the same settings, one object per file.
    process.stdout.write(JSON.stringify(files.map(({ file, log }) => ({ file, settings: [...log.settings.values()].map(masked).map(({ key, value, from }) => ({ key, value, from })) })), null, 2) + '\n');
    return EX.OK;
  }
  for (const { file, log } of files) {
    if (file === BUILT_IN) process.stdout.write('# no configuration file: the built-in defaults apply (create /etc/tidemail/tidemail.toml, or pass --config FILE)\n');
    printSettings(file, [...log.settings.values()]);
  }
  return EX.OK;
}

// A value that may be a secret is never printed, whatever its key is called in the file.
const SECRET_KEY = /(^|[._-])(pass(word)?|secret|token)$/i;

function masked(s: SettingRead): SettingRead {
  return SECRET_KEY.test(s.key) && s.value !== undefined && s.value !== '' ? { ...s, value: '(hidden)' } : s;
}

/** One file's effective settings as TOML in its own key names, each with where it came from. */
function printSettings(file: string, settings: SettingRead[]): void {
  const out: string[] = [`# ${file}`];
  const byTable = new Map<string, [string, SettingRead][]>();
  for (const s of settings) {
    const parts = s.path;
    // A part that is not a bare key ("lan.example") is written quoted, as in the file.
    const table = parts.slice(0, -1).map((p) => (/^[A-Za-z0-9_#-]+$/.test(p) ? p : JSON.stringify(p))).join('.');
    if (!byTable.has(table)) byTable.set(table, []);
    byTable.get(table)!.push([parts[parts.length - 1]!, s]);
  }
  // Top-level keys first (TOML puts them before any [table]), then tables in reading order.
  const tables = [...byTable.keys()].sort((a, b) => Number(a !== '') - Number(b !== ''));
  for (const table of tables) {
    if (table) out.push('', /#\d+$/.test(table) ? `[[${table.replace(/#\d+$/, '')}]]` : `[${table}]`);
    for (const [key, s] of byTable.get(table)!) {
      const value = tomlValue(masked(s).value);
      out.push(`${`${/^[A-Za-z0-9_-]+$/.test(key) ? key : JSON.stringify(key)} = ${value}`.padEnd(40)} # ${s.from === 'default' ? 'default' : s.from.slice(s.from.lastIndexOf('/') + 1)}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n\n');
}

function tomlValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null || v === undefined) return '""';
  return String(v);
}
