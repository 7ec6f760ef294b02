// Probe: the aliases file as the daemon will read it — its syntax, and what newaliases warns
// about (a target that is nobody here, an alias loop), so a household admin who edits
// /etc/aliases and runs `tidemail check` hears about `bob: nosuchuser` before mail bounces.

import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { compiledAliasesPath, parseAliasesFile } from '../local/aliases.js';
import { lintAliases, lintOptionsFor } from '../local/aliases-lint.js';
import fs from 'node:fs';
import { fail, ok, warn, type Finding } from './finding.js';

const AREA = 'aliases';

export async function probeAliases(config: Config): Promise<Finding[]> {
  const file = config.local.aliases;
  if (!file) return [];
  let parsed;
  try {
    parsed = await parseAliasesFile(file);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    const [problem, ...rest] = err.message.split('\n');
    const fix = rest.find((l) => l.trim().startsWith('fix:'))?.trim().slice('fix:'.length).trim() ?? `correct ${file}, then run newaliases`;
    return [fail(AREA, [problem, ...rest.filter((l) => !l.trim().startsWith('fix:'))].join('; '), fix)];
  }
  const out: Finding[] = [];
  for (const w of parsed.warnings) out.push(warn(AREA, w, `keep one of them in ${file}, then run newaliases`));
  for (const w of lintAliases(parsed.aliases, file, lintOptionsFor(config))) {
    out.push(warn(AREA, w, /alias loop/.test(w) ? `point one alias of the loop at a user, then run newaliases` : `create the user, or point the alias at someone who exists, then run newaliases`));
  }
  // The daemon then reads the text itself (aliases.ts AliasTable): slower, and it says so in its log.
  let stale = false;
  try {
    stale = fs.statSync(compiledAliasesPath(file)).mtimeMs < parsed.stat.mtimeMs;
  } catch {
    stale = true;
  }
  if (stale) out.push(warn(AREA, `${file} has changed since newaliases last compiled it (or was never compiled): the daemon reads the text instead`, 'run newaliases'));
  if (!out.length) out.push(ok(AREA, `${file}: ${parsed.aliases.size} aliases, every target is an alias, a user or an address elsewhere`));
  return out;
}
