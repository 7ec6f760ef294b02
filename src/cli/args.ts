// Walking a command's arguments: `--flag value`, `--flag=value`, bare flags and positionals,
// with one usage error for a flag that lacks its value.

import { UsageError } from '../errors.js';

export interface Arg {
  /** The flag without an inline value ("--since" for "--since=1h"), or the positional itself. */
  flag: string;
  /** The argument as given. */
  raw: string;
  /** The flag's value: inline after "=", else the next argument (which is then consumed). */
  value(): string;
}

/** Calls `visit` for each argument in order; `usage` ends the error for a missing value. */
export function eachArg(args: readonly string[], usage: string, visit: (a: Arg) => void): void {
  for (let i = 0; i < args.length; i++) {
    const raw = args[i]!;
    const eq = raw.indexOf('=');
    const [flag, inline] = raw.startsWith('--') && eq > 0 ? [raw.slice(0, eq), raw.slice(eq + 1)] : [raw, undefined];
    visit({
      flag,
      raw,
      value: () => {
        const v = inline ?? args[++i];
        if (v === undefined || v === '') throw new UsageError(`${flag} needs a value\n${usage}`);
        return v;
      },
    });
  }
}
