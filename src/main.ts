// Entry point: dispatch on the name we are called by (sendmail, mailq, runq, newaliases,
// mailrm, rmail, smtpd) or on the first argument of `tidemail`.

import { EX, quietWhenReaderGoes, reportError } from './cli/exit.js';
import { invokedName, wantsHelp, type Argv0Command } from './cli/invocation.js';
import { commandHelp, helpTopic, mainUsage, version } from './cli/usage.js';

type Command = (argv: string[]) => Promise<number>;

// Every command is imported only when it runs: `sendmail` from cron must not pay for loading the
// daemon, SMTP server and SQLite bindings it never uses (start-up time and memory, issue 17).
const runSendmail: Command = (a) => import('./cli/sendmail.js').then((m) => m.runSendmail(a));
const runDaemon: Command = (a) => import('./cli/daemon.js').then((m) => m.runDaemon(a));
const runQueueCommand: Command = (a) => import('./cli/queue.js').then((m) => m.runQueueCommand(a));

const BY_ARGV0: Record<Argv0Command, Command> = {
  sendmail: runSendmail,
  mailq: (a) => import('./cli/queue.js').then((m) => m.runMailq(a)),
  runq: (a) => runQueueCommand(['flush', ...a]),
  newaliases: (a) => import('./cli/newaliases.js').then((m) => m.runNewaliases(a)),
  mailrm: (a) => import('./cli/queue.js').then((m) => m.runMailrm(a)),
  rmail: (a) => import('./cli/rmail.js').then((m) => m.runRmail(a)),
  smtpd: (a) => import('./cli/smtpd.js').then((m) => m.runSmtpd(a)),
  'in.smtpd': (a) => import('./cli/smtpd.js').then((m) => m.runSmtpd(a)),
};

const SUBCOMMANDS: Record<string, Command | undefined> = {
  ...BY_ARGV0,
  daemon: runDaemon,
  queue: runQueueCommand,
  status: (a) => import('./cli/status.js').then((m) => m.runStatus(a)),
  link: (a) => import('./cli/link.js').then((m) => m.runLink(a)),
  fetch: (a) => import('./cli/fetch.js').then((m) => m.runFetch(a)),
  config: (a) => import('./cli/config.js').then((m) => m.runConfig(a)),
  user: (a) => import('./cli/user.js').then((m) => m.runUser(a)),
  tls: (a) => import('./cli/tls.js').then((m) => m.runTls(a)),
  setup: (a) => import('./cli/setup.js').then((m) => m.runSetup(a)),
  presets: (a) => import('./cli/setup.js').then((m) => m.runPresets(a)),
  check: (a) => import('./cli/check.js').then((m) => m.runCheck(a)),
  log: (a) => import('./cli/log.js').then((m) => m.runLog(a)),
  dkim: (a) => import('./cli/dkim.js').then((m) => m.runDkim(a)),
  uci: (a) => import('./cli/uci.js').then((m) => m.runUci(a)),
  'import-masqmail': (a) => import('./cli/import-masqmail.js').then((m) => m.runImportMasqmail(a)),
};

export async function main(argv: string[]): Promise<void> {
  const name = invokedName(argv);
  let command: Command | undefined = BY_ARGV0[name as Argv0Command];
  const prog = !command ? 'tidemail' : name;
  let args = argv.slice(2);
  let topic = name === 'in.smtpd' ? 'smtpd' : name;
  // Every command, help and --version too, ends quietly with its own code when the reader of its
  // output goes away; the daemon's stderr is its log, and it keeps what it does today.
  const daemon = !command && args[0] === 'daemon';
  if (!daemon) quietWhenReaderGoes(prog);
  if (!command) {
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
  // An error that escapes every command (a throw in a timer, a rejection nobody awaited) is
  // reported like one that did not: one line and a sysexits code, not node's stack dump.
  process.on('uncaughtException', (err) => process.exit(reportError(prog, err)));
  let code: number;
  try {
    code = await command(args);
  } catch (err) {
    code = reportError(prog, err);
  }
  process.exitCode = code;
  // Commands other than the daemon must not linger on open handles (sockets, timers), but they
  // exit only once their output has left: writes to a full pipe are queued, and exit() would cut
  // `tidemail log --json | jq` or a long mailq at the first 64 KiB the reader had not taken yet.
  if (command !== runDaemon) setImmediate(() => void written().then(() => process.exit(code)));
  else process.exit(code);
}

/** Resolves when stdout and stderr have nothing queued (or can take nothing more: EPIPE, closed). */
function written(): Promise<unknown> {
  return Promise.all(
    [process.stdout, process.stderr].map(
      (s) =>
        new Promise<void>((resolve) => {
          if (!s.writableLength || s.destroyed) return resolve();
          // An empty write's callback runs once everything queued before it is written.
          s.once('error', () => resolve());
          s.write('', () => resolve());
        }),
    ),
  );
}
