// Which checks exist and how they are built. Each check is its own module, imported only when a
// config names it, so a router that uses none of mailauth, DNS lists or milters never loads them.
//
// A check module exports `createCheck(env)`. It reads its options from env.options (the
// `[checks.NAME]` table), calls `env.options.rejectUnknown()`, and fails with
// `env.options.fail(key, problem, fix)` so a bad option is reported with file:line.

import type { Config } from '../config/schema.js';
import type { ConfigReader } from '../config/reader.js';
import { ConfigError } from '../errors.js';
import type { Check, Phase } from './check.js';

export interface CheckEnv {
  config: Config;
  /** The `[checks.NAME]` table (empty when absent). */
  options: ConfigReader;
  /** Our own domains: local and virtual. */
  isLocal(address: string): boolean;
  /** RCPT-time answer for a local recipient: an SmtpError refuses, null accepts. */
  checkRecipient?(address: string): Promise<Error | null>;
}

export type CheckFactory = (env: CheckEnv) => Check | Promise<Check>;

type CheckModule = { createCheck: CheckFactory };

/** Every check by config name. The SMTP front runs relay and recipients at RCPT always, first. */
export const CHECK_MODULES: Readonly<Record<string, () => Promise<CheckModule>>> = {
  relay: () => import('./relay.js'),
  recipients: () => import('./recipients.js'),
  syntax: () => import('./syntax.js'),
  dnsbl: () => import('./dnsbl.js'),
  dnswl: () => import('./dnswl.js'),
  'spf-dkim-dmarc': () => import('./spf-dkim-dmarc.js'),
  'dkim-sign': () => import('./dkim-sign.js'),
  greylist: () => import('./greylist.js'),
  ratelimit: () => import('./ratelimit.js'),
  policy: () => import('./policy-check.js'),
  milter: () => import('./milter-check.js'),
  spamd: () => import('./spamd.js'),
  clamd: () => import('./clamd.js'),
};

/** The checks that must run for a closed, honest server; prepended when a config leaves them out. */
export const MANDATORY_RCPT = ['relay', 'recipients'] as const;

/** Checks per phase, built once at daemon start and shared by every session. */
export type CheckPlan = Record<Phase, Check[]>;

/**
 * Builds the configured checks (one instance per name, shared by the phases that list it).
 * @throws ConfigError naming file:line for an unknown check, a phase the check cannot run in,
 * or a bad option.
 */
export async function buildChecks(config: Config, env: Omit<CheckEnv, 'options' | 'config'>): Promise<CheckPlan> {
  const plan: CheckPlan = { connect: [], helo: [], mail: [], rcpt: [], data: [] };
  const built = new Map<string, Check>();
  for (const phase of Object.keys(plan) as Phase[]) {
    for (const name of config.checks.phases[phase]) {
      let check = built.get(name);
      if (!check) {
        const load = CHECK_MODULES[name];
        if (!load) throw new ConfigError(`${config.checks.where(phase)}: unknown check "${name}"\n  fix: use one of ${Object.keys(CHECK_MODULES).join(', ')}`);
        const mod = await load();
        check = await mod.createCheck({ ...env, config, options: config.checks.options(name) });
        built.set(name, check);
      }
      if (!check.phases.includes(phase)) {
        throw new ConfigError(`${config.checks.where(phase)}: check "${name}" cannot run at ${phase}\n  fix: list it under ${check.phases.join(' or ')} in [checks]`);
      }
      plan[phase].push(check);
    }
  }
  return plan;
}

/** Every distinct check of a plan (for sessionEnded / close). */
export function allChecks(plan: CheckPlan): Check[] {
  return [...new Set(Object.values(plan).flat())];
}
