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

const USAGE = `usage: tidemail COMMAND [--config FILE] ...
  daemon                      run the mail daemon (foreground)
  sendmail [options] RCPT...  submit a message (same as the sendmail command)
  mailq                       list the queue
  queue list|show|remove|hold|release|requeue ID|flush
  runq                        try every queued message now (no daemon: here, as its user)
  status                      what is queued, why, and the state of each route
  link up|down NAME           a link hook: route or interface NAME changed
  fetch [ROUTE/USER]          fetch POP3 mailboxes now
  config check|show           validate / print the configuration
  user add|passwd|remove NAME SMTP AUTH users (password read from stdin); user list
  tls selfsigned --out DIR    make a self-signed cert.pem + key.pem for STARTTLS
  presets                     list the set-up presets
  setup PRESET [flags]        write a working config for a preset (laptop, router, pi-home, …)
  check [--json]              the startup doctor: config, ports, certificates, routes, DNS
  log ID|ADDRESS|--since 1h   the history of a message, from the queue database
  dkim keygen DOMAIN          make a DKIM key and print its DNS TXT record
  import-masqmail FILE        convert a masqmail configuration
  uci [--file F] [--out DIR]  OpenWrt: write /etc/tidemail/*.toml from /etc/config/tidemail
  smtpd                       one SMTP session on stdin/stdout (inetd)
  rmail RCPT...               accept a message from UUCP
  newaliases                  rebuild the aliases database
`;

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

export async function main(argv: string[]): Promise<void> {
  const name = path.basename(argv[1] ?? 'tidemail').replace(/\.js$/, '');
  let prog = name;
  let command = BY_ARGV0[name];
  let args = argv.slice(2);
  if (!command) {
    prog = 'tidemail';
    const sub = args[0];
    if (!sub || sub === 'help' || sub === '--help' || sub === '-h') {
      process.stdout.write(USAGE);
      process.exitCode = sub ? EX.OK : EX.USAGE;
      return;
    }
    command = SUBCOMMANDS[sub];
    if (!command) {
      process.stderr.write(`tidemail: unknown command "${sub}"\n${USAGE}`);
      process.exitCode = EX.USAGE;
      return;
    }
    args = args.slice(1);
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
