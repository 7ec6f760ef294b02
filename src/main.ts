// Entry point: dispatch on the name we are called by (sendmail, mailq, runq, newaliases,
// mailrm, rmail, smtpd) or on the first argument of `tidemail`.

import path from 'node:path';
import { runConfig } from './cli/config.js';
import { runDaemon } from './cli/daemon.js';
import { runLink } from './cli/link.js';
import { runFetch } from './cli/fetch.js';
import { runNewaliases } from './cli/newaliases.js';
import { EX, reportError } from './cli/exit.js';
import { runMailq, runMailrm, runQueueCommand } from './cli/queue.js';
import { runRmail } from './cli/rmail.js';
import { runSendmail } from './cli/sendmail.js';
import { runSmtpd } from './cli/smtpd.js';
import { runStatus } from './cli/status.js';
import { runTls } from './cli/tls.js';
import { runUser } from './cli/user.js';
import { commandHelp, helpTopic, mainUsage, version } from './cli/usage.js';

type Command = (argv: string[]) => Promise<number>;

const BY_ARGV0: Record<string, Command> = {
  sendmail: runSendmail,
  mailq: runMailq,
  runq: (a) => runQueueCommand(['flush', ...a]),
  newaliases: runNewaliases,
  mailrm: runMailrm,
  rmail: runRmail,
  smtpd: runSmtpd,
  'in.smtpd': runSmtpd,
};

const SUBCOMMANDS: Record<string, Command> = {
  ...BY_ARGV0,
  daemon: runDaemon,
  queue: runQueueCommand,
  status: runStatus,
  link: runLink,
  fetch: runFetch,
  config: runConfig,
  user: runUser,
  tls: runTls,
  // Set-up and diagnosis commands are loaded only when used.
  setup: (a) => import('./cli/setup.js').then((m) => m.runSetup(a)),
  presets: (a) => import('./cli/setup.js').then((m) => m.runPresets(a)),
  check: (a) => import('./cli/check.js').then((m) => m.runCheck(a)),
  log: (a) => import('./cli/log.js').then((m) => m.runLog(a)),
  dkim: (a) => import('./cli/dkim.js').then((m) => m.runDkim(a)),
  uci: (a) => import('./cli/uci.js').then((m) => m.runUci(a)),
  'import-masqmail': (a) => import('./cli/import-masqmail.js').then((m) => m.runImportMasqmail(a)),
};

/**
 * `--help` (and `-h`, except for sendmail, where it is an old option) anywhere before `--`:
 * every command answers it the same way, before its own parsing can call it unknown.
 */
function wantsHelp(command: string, args: readonly string[]): boolean {
  const end = args.indexOf('--');
  const opts = end < 0 ? args : args.slice(0, end);
  return opts.includes('--help') || (command !== 'sendmail' && opts.includes('-h'));
}

export async function main(argv: string[]): Promise<void> {
  const name = path.basename(argv[1] ?? 'tidemail').replace(/\.js$/, '');
  let prog = name;
  let command = BY_ARGV0[name];
  let args = argv.slice(2);
  let topic = name === 'in.smtpd' ? 'smtpd' : name;
  if (!command) {
    prog = 'tidemail';
    const sub = args[0];
    if (!sub || sub === 'help' || sub === '--help' || sub === '-h') {
      // `tidemail help CMD` is `tidemail CMD --help`.
      const asked = sub === 'help' && args[1] ? helpTopic(args[1], args.slice(2)) : null;
      process.stdout.write(asked ? commandHelp(asked) : mainUsage());
      process.exitCode = sub ? EX.OK : EX.USAGE;
      return;
    }
    if (sub === '--version' || sub === '-V') {
      process.stdout.write(`tidemail ${version()}\n`);
      process.exitCode = EX.OK;
      return;
    }
    command = SUBCOMMANDS[sub];
    if (!command) {
      process.stderr.write(`tidemail: unknown command "${sub}"\n${mainUsage()}`);
      process.exitCode = EX.USAGE;
      return;
    }
    args = args.slice(1);
    topic = helpTopic(sub, args) ?? sub;
  }
  if (wantsHelp(topic, args)) {
    process.stdout.write(commandHelp(topic, prog));
    process.exitCode = EX.OK;
    return;
  }
  let code: number;
  try {
    code = await command(args);
  } catch (err) {
    code = reportError(prog, err);
  }
  process.exitCode = code;
  // Commands other than the daemon must not linger on open handles (sockets, timers).
  if (command !== runDaemon) setImmediate(() => process.exit(code));
  else process.exit(code);
}
