// Builds a check the way the daemon does: its `[checks.NAME]` table from real TOML, read through
// a ConfigReader that reports file:line, handed to the module's createCheck.

import { parse } from 'smol-toml';
import { defaultConfig } from '../../src/config/load.js';
import { ConfigReader, type TomlTable } from '../../src/config/reader.js';
import type { Config } from '../../src/config/schema.js';
import type { Check, CheckContext, Phase } from '../../src/checks/check.js';
import type { CheckEnv, CheckFactory } from '../../src/checks/registry.js';

export interface CheckEnvOptions {
  stateDir?: string;
  /** Phase lists as the [checks] table would give them (default: the check at every phase it runs in). */
  phases?: Partial<Config['checks']['phases']>;
}

/** The CheckEnv for check `name`, whose options are the `[checks.NAME]` table of `toml`. */
export function checkEnv(name: string, toml: string, opts: CheckEnvOptions = {}): CheckEnv {
  const file = `/etc/tidemail/tidemail.toml`;
  const doc = parse(toml) as TomlTable;
  const table = ((doc.checks as TomlTable | undefined)?.[name] as TomlTable | undefined) ?? {};
  const base = defaultConfig();
  const config: Config = {
    ...base,
    stateDir: opts.stateDir ?? base.stateDir,
    checks: { ...base.checks, phases: { ...base.checks.phases, ...opts.phases } },
  };
  return {
    config,
    options: new ConfigReader(file, toml, table, ['checks', name]),
    isLocal: (a) => a.toLowerCase().endsWith('@tidemail.test'),
  };
}

export async function buildCheck(factory: CheckFactory, name: string, toml = '', opts: CheckEnvOptions = {}): Promise<Check> {
  return factory(checkEnv(name, toml, opts));
}

let sessions = 0;

/** A realistic context: an untrusted MX client, a fresh session, overridable field by field. */
export function context(phase: Phase, over: Partial<CheckContext> = {}): CheckContext {
  return {
    phase,
    sessionId: `s${++sessions}`,
    listener: 'mx',
    trusted: false,
    connection: {},
    // As the SMTP front gives it: transaction notes only inside a transaction.
    ...(phase === 'mail' || phase === 'rcpt' || phase === 'data' ? { transaction: {} } : {}),
    clientAddress: '198.51.100.7',
    clientHostname: 'mail.example.org',
    helo: 'mail.example.org',
    sender: 'alice@example.org',
    recipients: [],
    tls: false,
    ...over,
  };
}
