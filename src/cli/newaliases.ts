// newaliases (sendmail -bi): compiles the aliases file into the table the daemon reads
// (format at the top of local/aliases.ts). The daemon notices the new table on its next
// lookup; no restart or signal is needed. Targets that are nobody here and alias loops are
// warnings with file:line (aliases-lint.ts); the table is still written.

import { UsageError } from '../errors.js';
import { compileAliases } from '../local/aliases.js';
import { lintAliases, lintOptionsFor } from '../local/aliases-lint.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';
import { takeConfigOption } from './context.js';
import { loadConfig } from '../config/load.js';

const DEFAULT_ALIASES = '/etc/aliases';

/**
 * `newaliases [--aliases FILE]`: prints "FILE: N aliases" (duplicates as warnings on stderr).
 * @throws ConfigError (exit 78) naming file:line for syntax errors or a missing file;
 * UsageError for unknown arguments; fs errors (EACCES → 77) when the table cannot be written.
 */
export async function runNewaliases(argv: string[]): Promise<number> {
  const args = [...argv];
  const explicitConfig = takeConfigOption(args);
  const config = loadConfig(explicitConfig);
  let file = config.local.aliases ?? DEFAULT_ALIASES;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--aliases' && args[i + 1] !== undefined) file = args[++i]!;
    else if (a.startsWith('--aliases=')) file = a.slice('--aliases='.length);
    else throw new UsageError(`newaliases: unexpected argument "${a}"\n${usageLine('newaliases', 'newaliases')}`);
  }
  const { count, warnings } = await compileAliases(file, file, (aliases) => lintAliases(aliases, file, lintOptionsFor(config)));
  for (const w of warnings) process.stderr.write(`newaliases: warning: ${w}\n`);
  process.stdout.write(`${file}: ${count} aliases\n`);
  return EX.OK;
}
