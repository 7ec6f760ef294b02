// Every command's usage text, in one place: `tidemail --help`, `tidemail CMD --help` and the
// usage errors all print these, so the help and the errors cannot drift apart.

import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/** `setup`'s flags: in `setup --help` and in the error for an unknown flag. */
export const SETUP_FLAGS = `flags:
  --smarthost gmail|outlook|fastmail|HOST[:PORT]   where mail leaves (default: found from --user)
  --tls starttls|implicit|none    for HOST:PORT (default: implicit on 465, else starttls)
  --tls-ca-file FILE              an extra CA for the smarthost / POP3 server
  --user ADDRESS                  your login, and the address local senders leave as
  --password-file FILE            the password (with --oauth2: the refresh token); asked when missing
  --oauth2 --client-id ID [--client-secret-file FILE]   gmail/outlook: OAuth2 instead of an app password
  --no-auth                       the smarthost takes mail without a login (e.g. on your LAN)
  --domain DOMAIN                 your mail domain (internet-site), or an extra local domain
  --lan CIDR                      the LAN that may relay, e.g. 192.168.1.0/24
  --admin ADDRESS                 where root's and postmaster's mail goes
  --fetch pop3s://USER@HOST[:PORT]  a mailbox to fetch (repeatable); --fetch-password-file FILE for each
  --local-user NAME               whose mailbox local mail goes to (pi-home)
  --maildir PATH                  deliver to this Maildir (%u = user) instead of the preset's default
  --hostname NAME  --listen HOST:PORT (repeatable)  --wan IFACE (router, default wan)
  --tls-cert FILE --tls-key FILE  internet-site: the certificate (default: a self-signed one)
  --dns-server HOST[:PORT]        ask this DNS server for autodiscovery
  --root DIR                      write under DIR (DIR/etc/tidemail, DIR/var/lib/tidemail)
  --force                         replace an existing config (a backup is kept)`;

/** A command: its synopsis line in the main usage, and the text `CMD --help` prints. */
interface CommandHelp {
  synopsis: string;
  /** A shorter synopsis for the main usage, when the full one does not fit. */
  short?: string;
  summary: string;
  /** More lines for `CMD --help` (options); the synopsis is always printed first. */
  details?: string;
}

const CONFIG_OPT = '  --config FILE               the configuration (default /etc/tidemail/tidemail.toml)';

// Keys are what the user types after `tidemail` ("queue salvage" is a subcommand of queue).
const COMMANDS: Record<string, CommandHelp> = {
  daemon: { short: 'daemon', synopsis: 'daemon [--log-level debug|info|warn|error]', summary: 'run the mail daemon (foreground)', details: CONFIG_OPT },
  sendmail: { synopsis: 'sendmail [options] RCPT...', summary: 'submit a message (same as the sendmail command)', details: '  -t, -f ADDR, -F NAME, -i, -oi, -bs, -bp, -bi, -q … as sendmail(8)\n  -C FILE                     the configuration' },
  mailq: { synopsis: 'mailq', summary: 'list the queue', details: CONFIG_OPT },
  queue: { short: 'queue list|show|remove|hold|release|requeue ID', synopsis: 'queue list|show|remove|hold|release|requeue ID|flush|salvage', summary: 'look at and act on queued messages', details: '  ID is a 16-digit message id or a 20-digit recipient id from mailq\n' + CONFIG_OPT },
  'queue salvage': { synopsis: 'queue salvage', summary: 'rebuild a damaged queue.sqlite from its readable part (daemon stopped)', details: CONFIG_OPT },
  runq: { synopsis: 'runq', summary: 'try every queued message now (no daemon: here, as its user)', details: CONFIG_OPT },
  status: { synopsis: 'status [--json]', summary: 'what is queued, why, and the state of each route', details: CONFIG_OPT },
  link: { synopsis: 'link up|down NAME', summary: 'a link hook: route or interface NAME changed', details: '  NAME is a route or an interface; with the daemon down this is not an error\n' + CONFIG_OPT },
  fetch: { synopsis: 'fetch [ROUTE/USER]', summary: 'fetch POP3 mailboxes now (all accounts on online routes, or the one named)', details: CONFIG_OPT },
  config: { synopsis: 'config check|show [--json]', summary: 'validate / print the effective configuration (key, value, where it came from)', details: CONFIG_OPT },
  user: { short: 'user add|passwd|remove NAME|list', synopsis: 'user add|passwd|remove NAME | user list', summary: 'SMTP AUTH users (the password is read from stdin)', details: CONFIG_OPT },
  tls: { short: 'tls selfsigned --out DIR', synopsis: 'tls selfsigned --out DIR [--name HOST] [--force]', summary: 'make a self-signed cert.pem + key.pem for STARTTLS' },
  presets: { synopsis: 'presets [PRESET]', summary: 'list the set-up presets, or describe one' },
  setup: { synopsis: 'setup PRESET [flags]', summary: 'write a working config for a preset (laptop, router, pi-home, …)', details: SETUP_FLAGS },
  check: { short: 'check [--json] [--domain D]...', synopsis: 'check [--json] [--dns-server IP[:PORT]]... [--domain DOMAIN]... [--port25-domain DOMAIN]', summary: 'the startup doctor: config, ports, certificates, routes, DNS', details: CONFIG_OPT },
  log: { short: 'log ID|ADDRESS|--since 1h', synopsis: 'log ID|ADDRESS [--since 1h] [--json] | log --since 1h', summary: 'the history of a message, from the queue database', details: CONFIG_OPT },
  dkim: { short: 'dkim keygen DOMAIN [options]', synopsis: 'dkim keygen DOMAIN [--selector S] [--bits 2048] [--type rsa|ed25519] [--out DIR] [--force]', summary: 'make a DKIM key and print its DNS TXT record' },
  'import-masqmail': {
    short: 'import-masqmail [FILE] [--root DIR]',
    synopsis: 'import-masqmail [/etc/masqmail/masqmail.conf] [--out DIR | --root DIR] [--force]',
    summary: 'convert a masqmail configuration',
    details:
      '  --out DIR                   write tidemail.toml, routes/ and secrets/ into DIR (default /etc/tidemail)\n' +
      '  --root DIR                  a system image: read masqmail files under DIR, write DIR/etc/tidemail\n' +
      '  --force                     replace an existing config (a backup is kept)',
  },
  uci: {
    short: 'uci [--file F] [--out DIR]',
    synopsis: 'uci [--file /etc/config/tidemail] [--out /etc/tidemail]',
    summary: 'OpenWrt: write /etc/tidemail/*.toml from /etc/config/tidemail',
    details: '  every value is checked first; an error names /etc/config/tidemail:LINE and nothing is written (exit 78)',
  },
  smtpd: { synopsis: 'smtpd', summary: 'one SMTP session on stdin/stdout (inetd)', details: CONFIG_OPT },
  rmail: { synopsis: 'rmail RCPT...', summary: 'accept a message from UUCP', details: CONFIG_OPT },
  newaliases: { synopsis: 'newaliases [--aliases FILE]', summary: 'rebuild the aliases database (warns about targets that go nowhere)', details: CONFIG_OPT },
  mailrm: { synopsis: 'mailrm ID...', summary: 'remove messages from the queue', details: CONFIG_OPT },
};

/** Commands that are also installed under their own name (argv[0]). */
const OWN_NAME = new Set(['sendmail', 'mailq', 'runq', 'newaliases', 'mailrm', 'rmail', 'smtpd']);

/** `tidemail --help`: every command, including the subcommands listed separately. */
export function mainUsage(): string {
  const rows = Object.values(COMMANDS).map((c) => [c.short ?? c.synopsis, c.summary] as const);
  const width = 38;
  const lines = rows.map(([s, d]) => (s.length + 2 > width ? `  ${s}\n  ${''.padEnd(width)}${d}` : `  ${s.padEnd(width)}${d}`));
  return `usage: tidemail COMMAND [--config FILE] ...\n${lines.join('\n')}\n  --help (after any command)  that command's usage;  --version, -V  the version\n`;
}

/** The first line of a usage error for `command` (as typed after tidemail, or the program name). */
export function usageLine(command: string, prog = 'tidemail'): string {
  const c = COMMANDS[command];
  if (!c) return mainUsage();
  return OWN_NAME.has(command) && prog === command ? `usage: ${c.synopsis}` : `usage: tidemail ${c.synopsis}`;
}

/** `CMD --help`: synopsis, summary, options. */
export function commandHelp(command: string, prog = 'tidemail', extra?: string): string {
  const c = COMMANDS[command];
  if (!c) return mainUsage();
  return [usageLine(command, prog), `  ${c.summary}`, c.details, extra].filter(Boolean).join('\n') + '\n';
}

/** The longest known command the arguments start with ("queue salvage" before "queue"). */
export function helpTopic(sub: string, rest: readonly string[]): string | null {
  const two = rest[0] && `${sub} ${rest[0]}`;
  if (two && COMMANDS[two]) return two;
  return COMMANDS[sub] ? sub : null;
}

export function hasCommand(name: string): boolean {
  return name in COMMANDS;
}

/** The version in package.json (read, not copied, so a release bump cannot miss it). */
export function version(): string {
  const pkg = fileURLToPath(new URL('../../../package.json', import.meta.url));
  return (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { version: string }).version;
}
