// Loads /etc/tidemail/tidemail.toml (or --config / TIDEMAIL_CONFIG) into a Config, with the
// embedded local-only default when no file exists, so `npx tidemail daemon` just works.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { ConfigError } from '../errors.js';
import { parseCidr } from './cidr.js';
import { ConfigReader, openQuoteColumn, ReadLog, type SettingRead, type TomlTable } from './reader.js';
import type { Config, ListenAddress, TargetSource } from './schema.js';
import { emptyRelay, loadRelay } from '../relay/config.js';
import { defaultAlerts, loadAlerts } from '../alerts/config.js';

export const SYSTEM_CONFIG = '/etc/tidemail/tidemail.toml';

export function defaultStateDir(): string {
  // Root, and every user on a machine where the system daemon's state exists (the packages
  // create it): everyone's sendmail must drop into the one maildrop the daemon reads.
  if (process.getuid?.() === 0 || fs.existsSync('/var/lib/tidemail/maildrop')) return '/var/lib/tidemail';
  const xdg = process.env.XDG_STATE_HOME || path.join(os.homedir(), '.local', 'state');
  return path.join(xdg, 'tidemail');
}

/** The embedded local-only default: loopback listener, no routes, everything remote waits. */
export function defaultConfig(): Config {
  const hostname = os.hostname() || 'localhost';
  return {
    file: null,
    configDir: null,
    hostname,
    stateDir: defaultStateDir(),
    user: 'tidemail',
    userWhere: '(default config)',
    trustedUsers: [],
    smtp: {
      listen: [{ host: '127.0.0.1', port: 2525 }],
      trustedNetworks: ['127.0.0.0/8', '::1/128'],
      maxMessageSize: 25 * 1024 * 1024,
      maxRecipients: 1000,
      maxClients: 100,
      commandTimeoutMs: 5 * 60_000,
      submission: [],
      smtps: [],
      tlsCert: null,
      tlsKey: null,
      tlsWhere: { cert: 'tls_cert', key: 'tls_key' },
      usersFile: null,
      usersFileWhere: 'users_file',
      senders: {},
      allowPlainAuthOnLocalhost: false,
      maxLineLength: 998,
      maxCommandLength: 2048,
      maxMessagesPerConnection: 1000,
      maxErrors: 20,
      sessionTimeoutMs: 3_600_000,
      maxConnectionsPerIp: 20,
      greetDelayMs: 1000,
    },
    local: {
      domains: [...new Set([hostname, 'localhost'])],
      aliases: fs.existsSync('/etc/aliases') ? '/etc/aliases' : null,
      delivery: 'maildir',
      maildir: '~/Maildir',
      mbox: '/var/mail/%u',
      lmtp: '/var/run/dovecot/lmtp',
      mda: ['/usr/lib/dovecot/dovecot-lda', '-f', '{sender}', '-d', '{user}'],
      users: {},
      virtual: {},
      forward: false,
      passwdFile: null,
      preQueueDeadlineMs: 60_000,
      archive: null,
      minUid: 1000,
      allowMailToCommands: ['alias', 'include', 'forward'],
      allowMailToFiles: ['alias', 'include', 'forward'],
    },
    queue: {
      retryMinMs: 60_000,
      retryMaxMs: 4 * 3_600_000,
      maxLifetimeMs: 5 * 86_400_000,
      delayWarningMs: 4 * 3_600_000,
      noRouteRecheckMs: 3_600_000,
      queueMinfree: null,
    },
    checks: defaultChecks(null),
    relay: emptyRelay(),
    alerts: defaultAlerts(),
    logLevel: 'info',
  };
}

/** [checks] with the defaults: relay and recipients at RCPT, header syntax at end of DATA. */
function defaultChecks(reader: ConfigReader | null): Config['checks'] {
  const empty = (name: string) => new ConfigReader('(default)', '', {}, ['checks', name]);
  return {
    phases: { connect: [], helo: [], mail: [], rcpt: ['relay', 'recipients'], data: ['syntax'] },
    options: (name) => (reader?.has(name) ? reader.sub(name) : empty(name)),
    where: (phase) => reader?.where(phase) ?? '(default config)',
    timeoutMs: 30_000,
  };
}

const PHASES = ['connect', 'helo', 'mail', 'rcpt', 'data'] as const;

function loadChecks(top: ConfigReader): Config['checks'] {
  const reader = top.sub('checks');
  const checks = defaultChecks(reader);
  for (const phase of PHASES) {
    const list = reader.stringList(phase, checks.phases[phase]);
    if (new Set(list).size !== list.length) reader.fail(phase, 'names a check twice', 'list each check once per phase');
    checks.phases[phase] = list;
  }
  // relay and recipients always run first at RCPT: leaving them out would make an open relay,
  // or a server that accepts mail for unknown users and bounces it later.
  checks.phases.rcpt = [...new Set(['relay', 'recipients', ...checks.phases.rcpt])];
  checks.timeoutMs = reader.duration('timeout', checks.timeoutMs);
  // The remaining keys are the per-check tables, validated by the checks themselves.
  const optionTables = Object.keys(reader.table).filter((k) => !(PHASES as readonly string[]).includes(k) && k !== 'timeout');
  reader.rejectUnknown(optionTables.filter((k) => typeof reader.table[k] === 'object'));
  return checks;
}

/** Which file to read: explicit path, $TIDEMAIL_CONFIG, the system file, or none. */
export function resolveConfigPath(explicit?: string): string | null {
  if (explicit) return path.resolve(explicit);
  if (process.env.TIDEMAIL_CONFIG) return path.resolve(process.env.TIDEMAIL_CONFIG);
  return fs.existsSync(SYSTEM_CONFIG) ? SYSTEM_CONFIG : null;
}

/** Parses TOML; syntax errors become ConfigError with file:line and the parser's hint. */
export function parseTomlFile(file: string): { source: string; table: TomlTable } {
  let source: string;
  try {
    source = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`${file}: cannot read config file: ${e.code ?? e.message}\n  fix: check the path and its permissions`);
  }
  try {
    return { source, table: parse(source) as TomlTable };
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split('\n')[0];
      // A missing closing quote reads to the end of the line, where the parser sees a newline
      // ("control character") — point at where the string starts instead.
      const open = /control character|unterminated|newlines are not allowed/i.test(first ?? '') ? openQuoteColumn(source, err.line) : null;
      if (open !== null) {
        throw new ConfigError(`${file}:${err.line}:${err.column}: TOML syntax error: ${first}\n  unterminated string? the string starts at ${err.line}:${open}\n  fix: close it with the same quote on line ${err.line} (a string that spans lines is written \"\"\"…\"\"\")`);
      }
      throw new ConfigError(`${file}:${err.line}:${err.column}: TOML syntax error: ${first}\n  fix: correct the TOML syntax at line ${err.line}, column ${err.column} (strings need "quotes", tables are [name])`);
    }
    throw err;
  }
}

export function parseListen(text: string): ListenAddress | null {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(text) ?? /^([^:\s]+):(\d+)$/.exec(text);
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { host: m[1]!, port };
}

/** The [smtp] keys for submission, TLS and AUTH. */
function loadSubmission(smtp: ConfigReader, cfg: Config): void {
  const dir = cfg.configDir!;
  const listeners = (key: string) => smtp.stringList(key, []).map((l) => {
    return parseListen(l) ?? smtp.fail(key, `entry "${l}" is not HOST:PORT`, `write e.g. "127.0.0.1:${key === 'smtps' ? 465 : 587}"`);
  });
  cfg.smtp.submission = listeners('submission');
  cfg.smtp.smtps = listeners('smtps');
  const cert = smtp.string('tls_cert');
  const key = smtp.string('tls_key');
  if ((cert === undefined) !== (key === undefined)) {
    smtp.fail(cert === undefined ? 'tls_key' : 'tls_cert', 'is set without its pair', 'set both tls_cert and tls_key (PEM files), or neither');
  }
  cfg.smtp.tlsCert = cert === undefined ? null : path.resolve(dir, cert);
  cfg.smtp.tlsKey = key === undefined ? null : path.resolve(dir, key);
  cfg.smtp.tlsWhere = { cert: smtp.where('tls_cert'), key: smtp.where('tls_key') };
  for (const k of ['submission', 'smtps'] as const) {
    if (cfg.smtp[k].length && !cfg.smtp.tlsCert) {
      smtp.fail(k, 'needs a TLS certificate (AUTH is only allowed over TLS)',
        'set tls_cert = "/etc/tidemail/tls/cert.pem" and tls_key = "/etc/tidemail/tls/key.pem" in [smtp] (make a self-signed pair with `tidemail tls selfsigned --out /etc/tidemail/tls`)');
    }
  }
  cfg.smtp.usersFile = path.resolve(dir, smtp.string('users_file', 'users'));
  cfg.smtp.usersFileWhere = smtp.where('users_file');
  cfg.smtp.allowPlainAuthOnLocalhost = smtp.bool('allow_plain_auth_on_localhost', false);
  const senders = smtp.sub('senders');
  for (const user of Object.keys(senders.table)) {
    cfg.smtp.senders[user] = senders.stringList(user, []).map((s) => s.toLowerCase());
  }
}

export function loadConfig(explicit?: string): Config {
  return loadConfigWithSources(explicit).config;
}

/** The config and, for `config show`, every setting read with its effective value and origin. */
export function loadConfigWithSources(explicit?: string): { config: Config; settings: SettingRead[] } {
  const file = resolveConfigPath(explicit);
  if (!file) {
    // No file: the defaults, and (read from an empty file, then thrown away) their settings.
    const shown = readConfig(BUILT_IN, '', {}, defaultConfig());
    return { config: defaultConfig(), settings: shown.settings };
  }
  const { source, table } = parseTomlFile(file);
  return readConfig(file, source, table, defaultConfig());
}

/** What `config show` calls the settings when there is no config file. */
export const BUILT_IN = '(built-in defaults)';

function readConfig(file: string, source: string, table: TomlTable, cfg: Config): { config: Config; settings: SettingRead[] } {
  const log = new ReadLog();
  const top = new ConfigReader(file, source, table, [], log);
  cfg.file = file;
  cfg.configDir = path.dirname(file);
  cfg.hostname = top.string('hostname', cfg.hostname);
  if (!/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(cfg.hostname)) {
    top.fail('hostname', `"${cfg.hostname}" is not a valid host name`, 'use a fully qualified name such as "gw.home.arpa"');
  }
  cfg.stateDir = path.resolve(cfg.configDir, top.string('state_dir', cfg.stateDir));
  cfg.user = top.string('user', cfg.user);
  cfg.userWhere = top.where('user');
  // Shown in fixes (useradd --system NAME): a login name, never shell words.
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(cfg.user) || /^\d+$/.test(cfg.user)) top.fail('user', `"${cfg.user}" is not a login name`, 'set user = "tidemail" (or another unprivileged login name)');
  cfg.trustedUsers = top.stringList('trusted_users', cfg.trustedUsers);
  for (const u of cfg.trustedUsers) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/.test(u) || /^\d+$/.test(u)) top.fail('trusted_users', `entry "${u}" is not a login name`, 'list login names, e.g. trusted_users = ["uucp", "www-data"]');
  }
  cfg.local.domains = [...new Set([cfg.hostname, 'localhost'])];

  const smtp = top.sub('smtp');
  cfg.smtp.listen = smtp.stringList('listen', ['127.0.0.1:2525']).map((l) => {
    return parseListen(l) ?? smtp.fail('listen', `entry "${l}" is not HOST:PORT`, 'write e.g. "127.0.0.1:25" or "[::1]:25"');
  });
  cfg.smtp.trustedNetworks = smtp.stringList('trusted_networks', cfg.smtp.trustedNetworks);
  for (const n of cfg.smtp.trustedNetworks) {
    if (!parseCidr(n)) smtp.fail('trusted_networks', `entry "${n}" is not an address or CIDR`, 'write e.g. "192.168.1.0/24" or "::1/128"');
  }
  cfg.smtp.maxMessageSize = smtp.size('max_message_size', cfg.smtp.maxMessageSize);
  cfg.smtp.maxRecipients = smtp.integer('max_recipients', cfg.smtp.maxRecipients, 1);
  cfg.smtp.maxClients = smtp.integer('max_clients', cfg.smtp.maxClients, 1);
  cfg.smtp.commandTimeoutMs = smtp.duration('command_timeout', cfg.smtp.commandTimeoutMs);
  cfg.smtp.maxLineLength = smtp.integer('max_line_length', cfg.smtp.maxLineLength, 0);
  cfg.smtp.maxCommandLength = smtp.integer('max_command_length', cfg.smtp.maxCommandLength, 512);
  cfg.smtp.maxMessagesPerConnection = smtp.integer('max_messages_per_connection', cfg.smtp.maxMessagesPerConnection, 1);
  cfg.smtp.maxErrors = smtp.integer('max_errors', cfg.smtp.maxErrors, 1);
  cfg.smtp.sessionTimeoutMs = smtp.duration('session_timeout', cfg.smtp.sessionTimeoutMs);
  cfg.smtp.maxConnectionsPerIp = smtp.integer('max_connections_per_ip', cfg.smtp.maxConnectionsPerIp, 1);
  cfg.smtp.greetDelayMs = smtp.duration('greet_delay', cfg.smtp.greetDelayMs);
  loadSubmission(smtp, cfg);

  const local: ConfigReader = top.sub('local');
  cfg.local.domains = local.stringList('domains', cfg.local.domains).map((d) => d.toLowerCase());
  if (local.has('aliases')) {
    const a = local.string('aliases')!;
    cfg.local.aliases = a === '' ? null : path.resolve(cfg.configDir, a);
  }
  cfg.local.delivery = local.oneOf('delivery', ['maildir', 'mbox', 'lmtp', 'mda'] as const, cfg.local.delivery);
  cfg.local.maildir = local.string('maildir', cfg.local.maildir);
  cfg.local.mbox = local.string('mbox', cfg.local.mbox);
  cfg.local.lmtp = local.string('lmtp', cfg.local.lmtp);
  cfg.local.mda = local.stringList('mda', cfg.local.mda);
  cfg.local.forward = local.bool('forward', cfg.local.forward);
  if (local.has('passwd_file')) cfg.local.passwdFile = path.resolve(cfg.configDir, local.string('passwd_file')!);
  cfg.local.preQueueDeadlineMs = local.duration('pre_queue_deadline', cfg.local.preQueueDeadlineMs);
  cfg.local.archive = local.string('archive') ?? null;
  cfg.local.minUid = local.integer('min_uid', cfg.local.minUid, 1);
  for (const [key, field] of [['allow_mail_to_commands', 'allowMailToCommands'], ['allow_mail_to_files', 'allowMailToFiles']] as const) {
    const v = local.stringList(key, cfg.local[field]);
    const bad = v.find((x) => !['alias', 'include', 'forward'].includes(x));
    if (bad !== undefined) local.fail(key, `names "${bad}", which is not "alias", "include" or "forward"`, `write e.g. ${key} = ["alias", "forward"] (Postfix's classes)`);
    cfg.local[field] = v as TargetSource[];
  }
  const users: ConfigReader = local.sub('users');
  for (const k of Object.keys(users.table)) cfg.local.users[k.toLowerCase()] = users.string(k)!;
  const virtual: ConfigReader = local.sub('virtual');
  for (const domain of Object.keys(virtual.table)) {
    const map: ConfigReader = virtual.sub(domain);
    cfg.local.virtual[domain.toLowerCase()] = Object.fromEntries(Object.keys(map.table).map((k) => [k.toLowerCase(), map.string(k)!]));
  }

  const queue = top.sub('queue');
  cfg.queue.retryMinMs = queue.duration('retry_min', cfg.queue.retryMinMs);
  cfg.queue.retryMaxMs = queue.duration('retry_max', cfg.queue.retryMaxMs);
  cfg.queue.maxLifetimeMs = queue.duration('max_lifetime', cfg.queue.maxLifetimeMs);
  cfg.queue.delayWarningMs = queue.duration('delay_warning', cfg.queue.delayWarningMs);
  cfg.queue.noRouteRecheckMs = queue.duration('no_route_recheck', cfg.queue.noRouteRecheckMs);
  // Unset or "auto": worked out where the filesystem is known (queue/free-space.ts reserveOf).
  cfg.queue.queueMinfree = queue.sizeOrAuto('queue_minfree');
  if (cfg.queue.retryMinMs > cfg.queue.retryMaxMs) {
    queue.fail('retry_min', 'is larger than retry_max', 'make retry_min ≤ retry_max');
  }

  const logs = top.sub('log');
  cfg.logLevel = logs.oneOf('level', ['debug', 'info', 'warn', 'error'] as const, cfg.logLevel);
  cfg.relay = loadRelay(top, cfg.local);
  cfg.alerts = loadAlerts(top);

  // Unknown keys last, once every table has been read: a key in the wrong table is then named
  // with the table it belongs to (max_message_size under [queue] → [smtp]).
  for (const t of [smtp, local, queue, logs]) t.rejectUnknown();
  // Sections owned by later features are accepted here and validated by their modules.
  cfg.checks = loadChecks(top);
  top.rejectUnknown(['fetch', 'aliases']);
  return { config: cfg, settings: [...log.settings.values()] };
}
