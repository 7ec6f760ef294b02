// How we were called: by a command's own name (a symlink sendmail → bin/tidemail.js) or as
// `tidemail COMMAND`. Shared by main.ts and the sendmail bundle (src/sendmail-main.ts), so
// both read a command line the same way.

import path from 'node:path';

/** Names that act as a command of their own when the program is called by them. */
export const ARGV0_COMMANDS = ['sendmail', 'mailq', 'runq', 'newaliases', 'mailrm', 'rmail', 'smtpd', 'in.smtpd'] as const;
export type Argv0Command = (typeof ARGV0_COMMANDS)[number];

/** The name we were called by, without a .js suffix. */
export function invokedName(argv: readonly string[]): string {
  return path.basename(argv[1] ?? 'tidemail').replace(/\.js$/, '');
}

/**
 * `--help` (and `-h`, except for sendmail, where it is an old option) anywhere before `--`:
 * every command answers it the same way, before its own parsing can call it unknown.
 */
export function wantsHelp(command: string, args: readonly string[]): boolean {
  const end = args.indexOf('--');
  const opts = end < 0 ? args : args.slice(0, end);
  return opts.includes('--help') || (command !== 'sendmail' && opts.includes('-h'));
}
