// Reads <config dir>/routes/*.toml into route profiles, sorted by priority then file name.

import fs from 'node:fs';
import path from 'node:path';
import { parseTomlFile } from '../config/load.js';
import { ConfigReader } from '../config/reader.js';
import type { RouteProfile, TlsMode } from './profile.js';

const DEFAULT_PORT: Record<TlsMode, number> = { starttls: 587, implicit: 465, none: 25 };

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
  const routes = names.sort().map((n) => loadRoute(path.join(dir, n)));
  return routes.sort((a, b) => a.priority - b.priority || a.file.localeCompare(b.file));
}

export function loadRoute(file: string): RouteProfile {
  const { source, table } = parseTomlFile(file);
  const r: ConfigReader = new ConfigReader(file, source, table);
  const name = path.basename(file, '.toml');
  const target = r.string('smarthost');
  if (!target) r.fail(undefined, 'has no smarthost', 'add smarthost = "smtp.example.net:587"');
  const tls = r.oneOf('tls', ['starttls', 'implicit', 'none'] as const, 'starttls');
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(target) ?? /^([^:]+)(?::(\d+))?$/.exec(target);
  if (!m) r.fail('smarthost', `"${target}" is not HOST or HOST:PORT`, 'write e.g. smarthost = "smtp.example.net:587"');
  const port = m[2] ? Number(m[2]) : DEFAULT_PORT[tls];
  if (!(port >= 1 && port <= 65535)) r.fail('smarthost', `port ${m[2]} is out of range`, 'use a port between 1 and 65535');

  const authTable: ConfigReader = r.sub('auth');
  let auth: RouteProfile['auth'];
  const user = authTable.string('user');
  const passwordFile = authTable.string('password_file');
  if (user || passwordFile) {
    if (!user) authTable.fail('user', 'is missing while auth.password_file is set', 'add auth.user = "you@example.net"');
    if (!passwordFile) authTable.fail('password_file', 'is missing while auth.user is set', 'add auth.password_file = "/etc/tidemail/secrets/NAME" (mode 0600)');
    const pwPath = path.resolve(path.dirname(file), passwordFile);
    auth = { user, passwordFile: pwPath, password: readSecret(pwPath, authTable) };
  }
  authTable.rejectUnknown();

  const caFile = r.string('tls_ca_file');
  const route: RouteProfile = {
    kind: 'smarthost',
    name,
    file,
    priority: r.integer('priority', 100),
    host: m[1]!,
    port,
    tls,
    tlsVerify: r.bool('tls_verify', true),
    caFile: caFile ? path.resolve(path.dirname(file), caFile) : undefined,
    auth,
    heloName: r.string('helo_name'),
    senders: r.stringList('senders', []),
    recipients: r.stringList('recipients', []),
    notSenders: r.stringList('not_senders', []),
    notRecipients: r.stringList('not_recipients', []),
    maxConnections: r.integer('max_connections', 2, 1),
    messagesPerConnection: r.integer('messages_per_connection', 100, 1),
    connectTimeoutMs: r.duration('connect_timeout', 30_000),
  };
  if (route.caFile && !fs.existsSync(route.caFile)) r.fail('tls_ca_file', `file ${route.caFile} does not exist`, 'point it at a PEM file');
  r.rejectUnknown();
  return route;
}

/** Reads a secret file, refusing files that other users can read. */
export function readSecret(file: string, at: ConfigReader): string {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    return at.fail('password_file', `file ${file} does not exist`, `create it with the password on one line: install -m 600 /dev/null ${file} && editor ${file}`);
  }
  if (st.mode & 0o077) {
    at.fail('password_file', `file ${file} is readable by others (mode ${(st.mode & 0o777).toString(8)})`, `chmod 600 ${file}`);
  }
  try {
    return fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    return at.fail('password_file', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code}`, `make it readable by the tidemail user: chown tidemail ${file}`);
  }
}
