// Reads <config dir>/routes/*.toml into route profiles, sorted by priority then file name.

import fs from 'node:fs';
import path from 'node:path';
import { parseTomlFile } from '../config/load.js';
import { ConfigReader } from '../config/reader.js';
import { secretFileProblem } from '../config/secret-file.js';
import type {
  FetchSpec, MxRoute, OnlineSpec, PipeRoute, PopBeforeSmtpSpec, RewriteSpec, RouteKind, RouteProfile, SmarthostRoute, SmtpAuthSpec,
  SmtpClientSpec, SmtpDeadlines, SshRoute, TlsMode, WrapperRoute,
} from './profile.js';
import { DEFAULT_DEADLINES } from './profile.js';
import { formatDuration } from '../config/units.js';

const DEFAULT_PORT: Record<TlsMode, number> = { starttls: 587, implicit: 465, none: 25 };
const KINDS: readonly RouteKind[] = ['smarthost', 'mx', 'pipe', 'ssh', 'wrapper', 'local-only'];
const MIN_PROBE_INTERVAL_MS = 60_000;

export function routesDir(configDir: string): string {
  return path.join(configDir, 'routes');
}

export function loadRoutes(configDir: string | null): RouteProfile[] {
  if (!configDir) return [];
  const dir = routesDir(configDir);
  let names: string[];
  try {
    names = fs.readdirSync(dir).filter((n) => n.endsWith('.toml') && !n.startsWith('.'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  // Ties keep the file-name order of names.sort() (byte order, as `ls` in the C locale; the
  // sort is stable). Not localeCompare: its first call loads ICU's collation data, ~3 MB of the
  // daemon's RSS for as long as it runs (issue 17), and the order would depend on node's ICU.
  const routes = names.sort().map((n) => loadRoute(path.join(dir, n)));
  return routes.sort((a, b) => a.priority - b.priority);
}

/** "host", "host:port", "[v6]:port" → parts; null when malformed. */
export function parseHostPort(text: string, defaultPort: number): { host: string; port: number } | null {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(text) ?? /^([^:\s]+)(?::(\d+))?$/.exec(text);
  if (!m) return null;
  const port = m[2] ? Number(m[2]) : defaultPort;
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : null;
}

function hostPort(r: ConfigReader, key: string, text: string, defaultPort: number): { host: string; port: number } {
  return parseHostPort(text, defaultPort) ?? r.fail(key, `"${text}" is not HOST or HOST:PORT`, `write e.g. ${key} = "host.example.net:${defaultPort}"`);
}

function dnsServers(r: ConfigReader): string[] {
  return r.stringList('dns_servers', []).map((d) => {
    const hp = parseHostPort(d, 53);
    if (!hp || !/^[0-9a-fA-F:.]+$/.test(hp.host)) r.fail('dns_servers', `entry "${d}" is not an IP address with an optional port`, 'write e.g. dns_servers = ["192.168.1.1", "127.0.0.1:5353"]');
    return d;
  });
}

/** argv from either a list (exact) or a string (split on spaces, no shell). */
function argv(r: ConfigReader, key: string): string[] {
  const v = r.stringList(key, []);
  const words = v.length === 1 ? v[0]!.trim().split(/\s+/) : v;
  if (!words.length || !words[0]) r.fail(key, 'is empty', `write e.g. ${key} = ["/usr/bin/uux", "-", "host!rmail", "{recipients}"]`);
  return words;
}

export function loadRoute(file: string): RouteProfile {
  const { source, table } = parseTomlFile(file);
  const r: ConfigReader = new ConfigReader(file, source, table);
  const name = path.basename(file, '.toml');
  const inferred: RouteKind = r.has('smarthost') ? 'smarthost' : r.has('ssh') ? 'ssh' : r.has('wrapper') ? 'wrapper' : r.has('pipe') ? 'pipe' : 'smarthost';
  const kind = r.oneOf('kind', KINDS, inferred);
  const base = {
    name,
    file,
    priority: r.integer('priority', 100),
    senders: r.stringList('senders', []),
    recipients: r.stringList('recipients', []),
    notSenders: r.stringList('not_senders', []),
    notRecipients: r.stringList('not_recipients', []),
    online: readOnline(r),
    rewrite: readRewrite(r),
    schedule: readSchedule(r),
    // Postfix's initial_destination_concurrency: on a lossy link parallel sessions keep the queue
    // moving while one waits on a retransmission (link-flap bench: median 3.5 s with 2, 0.9 s with 6).
    maxConnections: r.integer('max_connections', 5, 1),
    messagesPerConnection: r.integer('messages_per_connection', 100, 1),
    fetch: r.subList('fetch').map((f) => readFetch(f, name)),
  };
  let route: RouteProfile;
  switch (kind) {
    case 'smarthost': {
      // One host as a string, or a list tried in order (the next one when a connection fails).
      const targets = r.stringList('smarthost', []);
      if (!targets.length) r.fail(r.has('smarthost') ? 'smarthost' : undefined, r.has('smarthost') ? 'is an empty list' : 'has no smarthost', 'add smarthost = "smtp.example.net:587" (or a list tried in order: ["a.example.net:587", "b.example.net:587"]; or set kind = "mx", "pipe", "ssh", "wrapper" or "local-only")');
      const smtp = readSmtpClient(r, 'starttls', kind);
      const tls = smtp.tls === 'opportunistic' ? 'starttls' : smtp.tls;
      const hosts = targets.map((t) => hostPort(r, 'smarthost', t, DEFAULT_PORT[tls]));
      route = { ...base, ...smtp, kind, ...hosts[0]!, hosts, dnsServers: dnsServers(r) } satisfies SmarthostRoute;
      break;
    }
    case 'mx':
      route = {
        ...base, ...readSmtpClient(r, 'opportunistic', kind), kind,
        port: r.integer('port', 25, 1),
        dnsServers: dnsServers(r),
      } satisfies MxRoute;
      break;
    case 'pipe':
      route = { ...base, kind, command: argv(r, 'pipe'), timeoutMs: r.duration('timeout', 10 * 60_000) } satisfies PipeRoute;
      break;
    case 'ssh': {
      const ssh: ConfigReader = r.sub('ssh');
      const host = hostPort(ssh, 'host', ssh.string('host') ?? ssh.fail('host', 'is missing', 'add ssh.host = "relay.example.net:22"'), 22);
      const target = hostPort(r, 'target', r.string('target', '127.0.0.1:25'), 25);
      const keyFile = path.resolve(path.dirname(file), ssh.string('key_file') ?? ssh.fail('key_file', 'is missing', 'add ssh.key_file = "/etc/tidemail/secrets/id_ed25519" (mode 0600)'));
      checkSecretMode(keyFile, ssh, 'key_file');
      const knownHosts = path.resolve(path.dirname(file), ssh.string('known_hosts') ?? ssh.fail('known_hosts', 'is missing', 'add ssh.known_hosts = "/etc/tidemail/known_hosts" (ssh-keyscan HOST > FILE, then check the fingerprint)'));
      if (!fs.existsSync(knownHosts)) ssh.fail('known_hosts', `file ${knownHosts} does not exist`, `create it: ssh-keyscan -p ${host.port} ${host.host} > ${knownHosts} (and verify the fingerprint)`);
      route = {
        ...base, ...readSmtpClient(r, 'none', kind), kind,
        sshHost: host.host, sshPort: host.port, sshUser: ssh.string('user', 'tidemail'), keyFile, knownHosts,
        targetHost: target.host, targetPort: target.port,
      } satisfies SshRoute;
      ssh.rejectUnknown();
      break;
    }
    case 'wrapper':
      route = { ...base, ...readSmtpClient(r, 'none', kind), kind, command: argv(r, 'wrapper') } satisfies WrapperRoute;
      break;
    case 'local-only':
      route = { ...base, kind };
      break;
  }
  r.rejectUnknown();
  return route;
}

function readFetch(f: ConfigReader, route: string): FetchSpec {
  const tls = f.oneOf('tls', ['implicit', 'starttls', 'none'] as const, 'implicit');
  const hp = hostPort(f, 'server', f.string('server') ?? f.fail('server', 'is missing', 'add server = "pop.example.net:995" to the [[fetch]] entry'), tls === 'implicit' ? 995 : 110);
  const user = f.string('user') ?? f.fail('user', 'is missing', 'add user = "me" to the [[fetch]] entry');
  const pw = path.resolve(path.dirname(f.file), f.string('password_file') ?? f.fail('password_file', 'is missing', 'add password_file = "/etc/tidemail/secrets/pop" (mode 0600)'));
  const deliverTo = f.stringList('deliver_to', []);
  if (!deliverTo.length) f.fail('deliver_to', 'is missing', 'add deliver_to = "alice" (a local user or address) to the [[fetch]] entry');
  const ca = f.string('tls_ca_file');
  const recipientsFrom = f.stringList('recipients_from', []);
  const recipientsDomains = f.stringList('recipients_domains', []).map((d) => d.toLowerCase().replace(/^@/, ''));
  if (recipientsFrom.some((h) => !/^[\x21-\x39\x3b-\x7e]+$/.test(h))) f.fail('recipients_from', 'holds something that is not a header name', 'write e.g. recipients_from = ["Delivered-To", "X-Original-To"]');
  if (recipientsFrom.length && !recipientsDomains.length) f.fail('recipients_domains', 'is missing', 'add recipients_domains = ["example.org"]: only addresses in these domains are taken from the headers');
  const spec: FetchSpec = {
    name: `${route}/${user}`,
    route,
    ...hp,
    tls,
    user,
    passwordFile: pw,
    password: readSecret(pw, f),
    auth: f.oneOf('auth', ['auto', 'user', 'apop', 'plain'] as const, 'auto'),
    keep: f.bool('keep', false),
    deliverTo,
    recipientsFrom,
    recipientsDomains,
    maxSize: f.has('max_size') ? f.size('max_size', 0) : undefined,
    oversize: f.oneOf('oversize', ['skip', 'headers'] as const, 'skip'),
    caFile: ca ? path.resolve(path.dirname(f.file), ca) : undefined,
    intervalMs: f.duration('interval', 5 * 60_000),
  };
  f.rejectUnknown();
  return spec;
}

function readOnline(r: ConfigReader): OnlineSpec {
  if (!r.has('online')) {
    r.string('online'); // mark as seen
    return { always: true, intervalMs: 5 * 60_000 };
  }
  if (typeof r.table.online === 'string') {
    const v = r.string('online');
    if (v !== 'always') r.fail('online', `is "${v}"`, 'write online = "always", or a table: online.interface = "wan", online.file, online.command, online.tcp');
    return { always: true, intervalMs: 5 * 60_000 };
  }
  const o: ConfigReader = r.sub('online');
  const spec: OnlineSpec = {
    always: false,
    file: o.string('file'),
    command: o.string('command'),
    interface: o.string('interface'),
    tcp: o.string('tcp'),
    intervalMs: Math.max(MIN_PROBE_INTERVAL_MS, o.duration('interval', 5 * 60_000)),
  };
  if (spec.tcp) hostPort(o, 'tcp', spec.tcp, 25);
  if (!spec.file && !spec.command && !spec.interface && !spec.tcp) {
    o.fail(undefined, 'names no detector', 'set one of online.file, online.command, online.interface, online.tcp — or online = "always"');
  }
  o.rejectUnknown();
  return spec;
}

function readRewrite(r: ConfigReader): RewriteSpec {
  const w: ConfigReader = r.sub('rewrite');
  const mapTable: ConfigReader = w.sub('map');
  const map: Record<string, string> = {};
  for (const k of Object.keys(mapTable.table)) map[k.toLowerCase()] = mapTable.string(k)!;
  const spec = { envelopeFrom: w.string('envelope_from'), headerFrom: w.string('header_from'), map };
  w.rejectUnknown();
  return spec;
}

function readSchedule(r: ConfigReader): string | undefined {
  const s = r.string('schedule');
  if (s === undefined) return undefined;
  const fields = s.trim().split(/\s+/);
  if (fields.length < 5 || fields.length > 6) r.fail('schedule', `"${s}" is not a cron expression`, 'write five fields, e.g. schedule = "*/30 * * * *" (every 30 minutes)');
  return s;
}

function readSmtpClient(r: ConfigReader, defaultTls: SmtpClientSpec['tls'], kind: RouteKind): SmtpClientSpec {
  const choices = defaultTls === 'opportunistic' ? (['opportunistic', 'starttls', 'none'] as const) : (['starttls', 'implicit', 'none'] as const);
  const tls = r.oneOf('tls', choices as readonly SmtpClientSpec['tls'][], defaultTls);
  const caFile = r.string('tls_ca_file');
  const spec: SmtpClientSpec = {
    tls,
    tlsVerify: r.bool('tls_verify', true),
    caFile: caFile ? path.resolve(path.dirname(r.file), caFile) : undefined,
    auth: readAuth(r),
    heloName: r.string('helo_name'),
    // A dead link must not hold a delivery for long: every address is raced within this.
    connectTimeoutMs: positiveDuration(r, 'connect_timeout', 10_000),
    keepAliveMs: positiveDuration(r, 'keepalive', 15_000),
    progressMs: positiveDuration(r, 'progress_timeout', 20_000),
    // "0" turns it off: a server that always answers slowly is learned, but a route may know it.
    stallMs: r.duration('stall_timeout', DEFAULT_STALL_MS),
    popBeforeSmtp: readPopBeforeSmtp(r),
    allowPlainAuth: r.bool('allow_plain_auth', kind === 'ssh'),
    deadlines: readDeadlines(r),
  };
  if (spec.caFile && !fs.existsSync(spec.caFile)) r.fail('tls_ca_file', `file ${spec.caFile} does not exist`, 'point it at a PEM file');
  // A password (or OAuth2 token) in clear is readable by anyone on the path: never by default.
  if (spec.auth && tls === 'none' && !spec.allowPlainAuth) {
    r.fail('tls', 'is "none" while auth is set: the login would go over the network unencrypted',
      `use tls = "starttls" (port 587) or tls = "implicit" (port 465); only if the link itself is encrypted or trusted, add allow_plain_auth = true to ${path.basename(r.file)}`);
  }
  return spec;
}

/** Per-reply and per-delivery deadlines (see SmtpDeadlines), each more than zero. */
function readDeadlines(r: ConfigReader): SmtpDeadlines {
  const d = DEFAULT_DEADLINES;
  return {
    greetingMs: positiveDuration(r, 'greeting_timeout', d.greetingMs),
    heloMs: positiveDuration(r, 'helo_timeout', d.heloMs),
    mailMs: positiveDuration(r, 'mail_timeout', d.mailMs),
    rcptMs: positiveDuration(r, 'rcpt_timeout', d.rcptMs),
    dataMs: positiveDuration(r, 'data_timeout', d.dataMs),
    dataDoneMs: positiveDuration(r, 'data_done_timeout', d.dataDoneMs),
    transactionMs: positiveDuration(r, 'transaction_timeout', d.transactionMs),
  };
}

/** Above the round trips of a home link (LTE ~0.1-0.3 s), below TCP's back-off after two losses. */
const DEFAULT_STALL_MS = 3_000;

function positiveDuration(r: ConfigReader, key: string, dflt: number): number {
  const ms = r.duration(key, dflt);
  // Zero would mean "fail at once"; no timeout at all is what this option exists to prevent.
  if (ms < 1) r.fail(key, 'is zero', `write a positive duration, e.g. ${key} = "${formatDuration(dflt)}"`);
  return ms;
}

function readAuth(r: ConfigReader): SmtpAuthSpec | undefined {
  const a: ConfigReader = r.sub('auth');
  const user = a.string('user');
  const passwordFile = a.string('password_file');
  const oauth = a.has('oauth2') ? a.sub('oauth2') : null;
  let spec: SmtpAuthSpec | undefined;
  if (oauth) {
    if (!user) a.fail('user', 'is missing', 'add auth.user = "you@gmail.com" (the account the token belongs to)');
    const dir = path.dirname(r.file);
    const refreshTokenFile = path.resolve(dir, oauth.string('refresh_token_file') ?? oauth.fail('refresh_token_file', 'is missing', 'add refresh_token_file = "/etc/tidemail/secrets/NAME.token" (mode 0600)'));
    checkSecretMode(refreshTokenFile, oauth, 'refresh_token_file');
    const secret = oauth.string('client_secret_file');
    if (secret) checkSecretMode(path.resolve(dir, secret), oauth, 'client_secret_file');
    spec = {
      kind: 'oauth2',
      user,
      mechanism: oauth.oneOf('mechanism', ['XOAUTH2', 'OAUTHBEARER'] as const, 'XOAUTH2'),
      tokenUrl: oauth.string('token_url') ?? oauth.fail('token_url', 'is missing', 'add token_url = "https://oauth2.googleapis.com/token" (see routes/gmail.toml)'),
      clientId: oauth.string('client_id') ?? oauth.fail('client_id', 'is missing', 'add client_id = "…" from your OAuth app registration'),
      clientSecretFile: secret ? path.resolve(dir, secret) : undefined,
      refreshTokenFile,
      scope: oauth.string('scope'),
    };
    oauth.rejectUnknown();
  } else if (user || passwordFile) {
    if (!user) a.fail('user', 'is missing while auth.password_file is set', 'add auth.user = "you@example.net"');
    if (!passwordFile) a.fail('password_file', 'is missing while auth.user is set', 'add auth.password_file = "/etc/tidemail/secrets/NAME" (mode 0600)');
    const pwPath = path.resolve(path.dirname(r.file), passwordFile);
    spec = { kind: 'password', user, passwordFile: pwPath, password: readSecret(pwPath, a) };
  }
  a.rejectUnknown();
  return spec;
}

function readPopBeforeSmtp(r: ConfigReader): PopBeforeSmtpSpec | undefined {
  if (!r.has('pop_before_smtp')) return undefined;
  const p: ConfigReader = r.sub('pop_before_smtp');
  const tls = p.oneOf('tls', ['implicit', 'starttls', 'none'] as const, 'implicit');
  const hp = hostPort(p, 'server', p.string('server') ?? p.fail('server', 'is missing', 'add pop_before_smtp.server = "pop.example.net:995"'), tls === 'implicit' ? 995 : 110);
  const user = p.string('user') ?? p.fail('user', 'is missing', 'add pop_before_smtp.user = "me"');
  const pw = path.resolve(path.dirname(r.file), p.string('password_file') ?? p.fail('password_file', 'is missing', 'add pop_before_smtp.password_file = "/etc/tidemail/secrets/pop" (mode 0600)'));
  const spec = { ...hp, tls, user, passwordFile: pw, password: readSecret(pw, p) };
  p.rejectUnknown();
  return spec;
}

/**
 * A secret file must be there, private and readable. "Cannot read" (a 0600 file of root's, read
 * by a user) is never called "missing", and no fix truncates an existing file (secret-file.ts).
 */
function checkSecretMode(file: string, at: ConfigReader, key: string): void {
  const problem = secretFileProblem(file);
  if (problem) at.fail(key, problem.problem, problem.fix);
}

/** Reads a secret file, refusing files that other users can read. */
export function readSecret(file: string, at: ConfigReader, key = 'password_file'): string {
  checkSecretMode(file, at, key);
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    return at.fail(key, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, 'run this as root or as the owner of the file');
  }
}
