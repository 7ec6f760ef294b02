// `sendmail` submitting one message — what every cron job runs — as a program of its own
// (issue 17). packaging/bundle.mjs bundles this module and what it imports into one CommonJS
// file, dist/bundle/sendmail.cjs, with V8's code cache for it beside it (ES modules get none on
// Node 20), and the launcher runs it for `sendmail` and `tidemail sendmail`
// (src/sendmail-loader.ts). It does the submission only; for anything else — another mode,
// --help, a command line or configuration it would refuse — it answers null before reading
// stdin, and the launcher runs the whole program, which answers as it always has.

import { cliContext, type CliContext } from './cli/context.js';
import { reportError } from './cli/exit.js';
import { ARGV0_COMMANDS, invokedName, wantsHelp } from './cli/invocation.js';
import { parseSendmailArgs, type SendmailArgs } from './cli/sendmail-args.js';
import { submit } from './cli/sendmail-submit.js';
import { stdinChunks } from './cli/stdin.js';

/** The exit code of a submission, or null: not a submission, the whole program handles it. */
export async function sendmailMain(argv: string[]): Promise<number | null> {
  const name = invokedName(argv);
  const called = name === 'sendmail' ? { prog: 'sendmail', args: argv.slice(2) }
    : !(ARGV0_COMMANDS as readonly string[]).includes(name) && argv[2] === 'sendmail' ? { prog: 'tidemail', args: argv.slice(3) }
    : null;
  if (!called || wantsHelp('sendmail', called.args)) return null;
  let args: SendmailArgs;
  let ctx: CliContext;
  try {
    args = parseSendmailArgs(called.args);
    if (args.mode !== 'deliver') return null;
    ctx = cliContext(args.configPath);
  } catch {
    return null; // the whole program says what is wrong, in its words
  }
  // As cli/sendmail.ts's runSendmail, from here on.
  if (args.verbose && args.ignored.length) process.stderr.write(`sendmail: ignored for compatibility: ${args.ignored.join(' ')}\n`);
  try {
    return await submit(ctx, args, stdinChunks(), 'sendmail');
  } catch (err) {
    return reportError(called.prog, err);
  }
}
