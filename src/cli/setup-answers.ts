// The answers for `tidemail setup PRESET`: the command line parsed (parseFlags), each value
// checked, and what is missing asked on a terminal (collect; a usage error naming the flag
// otherwise): the smarthost (given, a provider template, or discovered from --user), its login,
// the LAN, the local user, POP3 mailboxes, the delivery. What is done with them is setup.ts.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NetworkList, parseCidr } from '../config/cidr.js';
import { parseListen } from '../config/load.js';
import { UsageError } from '../errors.js';
import { SETUP_FLAGS } from './usage.js';
import { lookupUser } from '../local/users.js';
import { discoverServers, loadProviderTemplate, PROVIDERS, type Discovery, type ProviderName } from '../presets/discover.js';
import type { Asker } from '../presets/prompt.js';
import { setupPaths, type Answers, type FetchAnswer, type Preset, type SmarthostAnswer } from '../presets/registry.js';
import { parseHostPort } from '../routes/load.js';
import type { TlsMode } from '../routes/profile.js';

const VALUE_FLAGS = new Set([
  'smarthost', 'tls', 'tls-ca-file', 'user', 'password-file', 'client-id', 'client-secret-file', 'domain', 'lan', 'admin',
  'fetch', 'fetch-password-file', 'local-user', 'maildir', 'hostname', 'listen', 'tls-cert', 'tls-key', 'dns-server', 'root', 'wan',
]);
const BOOLEAN_FLAGS = new Set(['oauth2', 'no-auth', 'force']);
const REPEATABLE = new Set(['fetch', 'fetch-password-file', 'listen']);

export type Flags = Record<string, string | string[] | boolean | undefined>;

export function parseFlags(argv: string[]): { positional: string[]; flags: Flags } {
  const flags: Flags = {};
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (BOOLEAN_FLAGS.has(name) && eq < 0) {
      flags[name] = true;
      continue;
    }
    if (!VALUE_FLAGS.has(name)) throw new UsageError(`setup: unknown option --${name}\n${SETUP_FLAGS}`);
    const value = eq < 0 ? argv[++i] : a.slice(eq + 1);
    if (value === undefined || value === '') throw new UsageError(`setup: --${name} needs a value`);
    if (REPEATABLE.has(name)) flags[name] = [...((flags[name] as string[] | undefined) ?? []), value];
    else flags[name] = value;
  }
  return { positional, flags };
}

export const str = (f: Flags, k: string) => f[k] as string | undefined;
const list = (f: Flags, k: string) => (f[k] as string[] | undefined) ?? [];

const isAddress = (s: string) => (/^[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$/.test(s) ? null : `"${s}" is not a mail address like me@example.net`);
const isHostname = (s: string) => (/^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$/.test(s) ? null : `"${s}" is not a host name`);
const isCidr = (s: string) => (parseCidr(s) && s.includes('/') ? null : `"${s}" is not a network like 192.168.1.0/24`);

/** The secret in FILE (first line kept whole, trailing newline dropped). */
function readSecretArg(flag: string, file: string): string {
  try {
    const v = fs.readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    if (!v) throw new UsageError(`setup: ${flag} ${file} is empty`);
    return v;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`setup: cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

function readableFile(flag: string, file: string): string {
  const p = path.resolve(file);
  if (!fs.existsSync(p)) throw new UsageError(`setup: ${flag} ${file} does not exist`);
  return p;
}

/** This machine's address inside the LAN (to listen on), if it has one. */
function addressIn(cidr: string): string | undefined {
  const net = new NetworkList([cidr]);
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) if (!i.internal && net.contains(i.address)) return i.address;
  }
  return undefined;
}

/** The network of the first non-internal IPv4 interface: a sensible --lan default. */
function guessLan(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const i of list ?? []) {
      if (i.internal || i.family !== 'IPv4' || !i.cidr) continue;
      const [addr, prefix] = i.cidr.split('/');
      const bits = Number(prefix);
      const n = addr!.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
      const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
      const net = (n & mask) >>> 0;
      return `${[24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.')}/${bits}`;
    }
  }
  return undefined;
}

function defaultHostname(domain?: string): string {
  const h = os.hostname();
  if (domain && !h.endsWith(`.${domain}`)) return `mail.${domain}`;
  return h || 'localhost';
}

export interface Collected {
  answers: Answers;
  discovery: Discovery | null;
  notes: string[];
}

/** The smarthost from --smarthost, or discovered from --user (asked for when neither works). */
async function chooseSmarthost(preset: Preset, flags: Flags, ask: Asker, user: string | undefined, notes: string[]): Promise<{ s: Omit<SmarthostAnswer, 'auth'>; discovery: Discovery | null }> {
  let spec = str(flags, 'smarthost');
  let discovery: Discovery | null = null;
  const domain = user?.includes('@') ? user.slice(user.lastIndexOf('@') + 1).toLowerCase() : undefined;
  if (!spec && user) {
    discovery = await discoverServers(user, str(flags, 'dns-server'));
    if (discovery) {
      notes.push(`found ${discovery.smarthost.host}:${discovery.smarthost.port} (${discovery.smarthost.tls}) for ${user} by ${discovery.source}`);
    } else {
      notes.push(`no SRV records and no provider template for ${domain ?? user}`);
    }
  }
  if (!spec && !discovery) {
    spec = await ask.ask({
      flag: '--smarthost',
      text: user
        ? `Your provider's SMTP server for ${user}, gmail, outlook, fastmail or HOST:PORT (no SRV records and no provider template for ${domain ?? user})`
        : 'Your provider\'s SMTP server: gmail, outlook, fastmail or HOST:PORT',
      validate: (v) => (PROVIDERS.includes(v as ProviderName) || parseHostPort(v, 587) ? null : `"${v}" is not gmail, outlook, fastmail or HOST:PORT`),
    });
  }
  const caFile = str(flags, 'tls-ca-file') ? readableFile('--tls-ca-file', str(flags, 'tls-ca-file')!) : undefined;
  if (discovery && !spec) {
    const tpl = discovery.provider ? loadProviderTemplate(discovery.provider, domain) : null;
    return {
      s: { name: discovery.provider ?? 'isp', provider: discovery.provider, ...discovery.smarthost, caFile, source: discovery.source, messagesPerConnection: tpl?.messagesPerConnection },
      discovery,
    };
  }
  if (PROVIDERS.includes(spec as ProviderName)) {
    const tpl = loadProviderTemplate(spec as ProviderName, domain);
    return { s: { name: tpl.name, provider: tpl.name, ...tpl.smarthost, caFile, source: `--smarthost ${spec} (template ${tpl.file})`, messagesPerConnection: tpl.messagesPerConnection }, discovery };
  }
  const hp = parseHostPort(spec!, 587);
  if (!hp) throw new UsageError(`setup ${preset.name}: --smarthost "${spec}" is not gmail, outlook, fastmail or HOST:PORT`);
  const tlsFlag = str(flags, 'tls');
  if (tlsFlag && !['starttls', 'implicit', 'none'].includes(tlsFlag)) throw new UsageError('setup: --tls must be starttls, implicit or none');
  const tls = (tlsFlag as TlsMode | undefined) ?? (hp.port === 465 ? 'implicit' : 'starttls');
  return { s: { name: 'isp', ...hp, tls, caFile, source: `--smarthost ${spec}` }, discovery };
}

async function chooseAuth(preset: Preset, flags: Flags, ask: Asker, s: Omit<SmarthostAnswer, 'auth'>, user: string | undefined): Promise<SmarthostAnswer['auth']> {
  if (flags['no-auth']) return null;
  if (!user) return null; // satellite without --user: a smarthost that takes mail without login
  const where = `${s.host}:${s.port}`;
  if (flags.oauth2) {
    const tpl = s.provider ? loadProviderTemplate(s.provider, user.slice(user.lastIndexOf('@') + 1)) : null;
    if (!tpl?.oauth2) throw new UsageError(`setup ${preset.name}: --oauth2 needs --smarthost gmail or outlook (their templates name the token endpoint)`);
    const clientId = str(flags, 'client-id') ?? (await ask.ask({ flag: '--client-id', text: `OAuth2 client ID of your app registration at ${s.provider}` }));
    const tokenFile = str(flags, 'password-file');
    const refreshToken = tokenFile ? readSecretArg('--password-file', tokenFile) : await ask.secret({ flag: '--password-file', text: `OAuth2 refresh token for ${user}` });
    const cs = str(flags, 'client-secret-file');
    return {
      kind: 'oauth2', user, tokenUrl: tpl.oauth2.tokenUrl, scope: tpl.oauth2.scope, mechanism: tpl.oauth2.mechanism, clientId, refreshToken,
      clientSecret: cs ? readSecretArg('--client-secret-file', cs) : undefined,
    };
  }
  const pwFile = str(flags, 'password-file');
  const hint = s.provider ? ` (an app password from ${s.provider})` : '';
  const password = pwFile ? readSecretArg('--password-file', pwFile) : await ask.secret({ flag: '--password-file', text: `Password for ${user} at ${where}${hint}` });
  return { kind: 'password', user, password };
}

function parseFetchUrl(url: string): Omit<FetchAnswer, 'password'> {
  const m = /^(pop3s?):\/\/(.+)@([^@/:]+|\[[^\]]+\])(?::(\d+))?\/?$/.exec(url);
  if (!m) throw new UsageError(`setup: --fetch "${url}" is not pop3s://USER@HOST[:PORT] (or pop3:// for STARTTLS on 110)`);
  const implicit = m[1] === 'pop3s';
  return { user: decodeURIComponent(m[2]!), host: m[3]!.replace(/^\[|\]$/g, ''), port: m[4] ? Number(m[4]) : implicit ? 995 : 110, tls: implicit ? 'implicit' : 'starttls' };
}

export async function collect(preset: Preset, flags: Flags, ask: Asker): Promise<Collected> {
  const notes: string[] = [];
  const paths = setupPaths(path.resolve(str(flags, 'root') ?? '/'));
  const needs = preset.needs;

  let user = str(flags, 'user');
  if (!user && needs.user === 'required') user = await ask.ask({ flag: '--user', text: 'Your mail address (your login at the provider)', validate: isAddress });
  if (user && needs.user === 'no') notes.push('--user is not used by this preset');

  let smarthost: SmarthostAnswer | undefined;
  let discovery: Discovery | null = null;
  if (needs.smarthost !== 'no') {
    const chosen = await chooseSmarthost(preset, flags, ask, user, notes);
    discovery = chosen.discovery;
    smarthost = { ...chosen.s, auth: await chooseAuth(preset, flags, ask, chosen.s, user) };
    if (smarthost.provider === 'outlook' && smarthost.auth?.kind === 'password') {
      notes.push('Microsoft turns password logins (SMTP AUTH) off for most accounts; if mail is deferred with "authentication failed", set up OAuth2: --oauth2 --client-id ID (see routes/outlook.toml)');
    }
  }

  let domain = str(flags, 'domain');
  if (!domain && needs.domain === 'required') domain = await ask.ask({ flag: '--domain', text: 'Your mail domain (mail for it is delivered here)', validate: isHostname });
  if (domain && isHostname(domain)) throw new UsageError(`setup: --domain ${isHostname(domain)}`);

  const hostname = str(flags, 'hostname') ?? defaultHostname(preset.name === 'internet-site' ? domain : undefined);
  if (isHostname(hostname)) throw new UsageError(`setup: --hostname ${isHostname(hostname)}`);

  let lan = str(flags, 'lan');
  if (!lan && needs.lan === 'required') lan = await ask.ask({ flag: '--lan', text: 'Your LAN, which may send mail through this machine', default: guessLan(), validate: isCidr });
  if (lan && isCidr(lan)) throw new UsageError(`setup: --lan ${isCidr(lan)}`);
  const lanAddress = lan ? addressIn(lan) : undefined;
  if (lan && !lanAddress && !flags.listen) notes.push(`no address of this machine is inside ${lan}: listening on loopback only (add the LAN address to [smtp] listen)`);

  let localUser = str(flags, 'local-user');
  const sudoUser = process.env.SUDO_USER && process.env.SUDO_USER !== 'root' ? process.env.SUDO_USER : undefined;
  if (!localUser && needs.localUser === 'required') {
    localUser = await ask.ask({ flag: '--local-user', text: 'The local user whose mailbox gets the mail', default: sudoUser, validate: (v) => (v === 'root' ? 'not root: pick the person\'s own account' : lookupUser(v) ? null : `no user "${v}" on this system`) });
  }
  if (!localUser && needs.localUser === 'optional') localUser = sudoUser;
  if (localUser && needs.localUser !== 'no') {
    if (localUser === 'root') throw new UsageError('setup: --local-user must not be root (the daemon would run as it)');
    if (!lookupUser(localUser)) throw new UsageError(`setup: --local-user ${localUser}: no such user on this system`);
  }

  let admin = str(flags, 'admin');
  if (!admin && needs.admin === 'required') {
    admin = await ask.ask({ flag: '--admin', text: 'Where root\'s and postmaster\'s mail should go (an address)', default: user, validate: (v) => (v.includes('@') ? isAddress(v) : null) });
  }
  if (admin && needs.admin === 'no') notes.push('--admin is not used by this preset');

  const fetch: FetchAnswer[] = [];
  const fetchPw = list(flags, 'fetch-password-file');
  const fetchUrls = list(flags, 'fetch');
  if (fetchUrls.length && !needs.fetch) throw new UsageError(`setup ${preset.name}: --fetch is for pi-home (this preset delivers no mail locally)`);
  for (const [i, url] of fetchUrls.entries()) {
    const f = parseFetchUrl(url);
    const pwFile = fetchPw[i];
    const password = pwFile ? readSecretArg('--fetch-password-file', pwFile) : await ask.secret({ flag: '--fetch-password-file', text: `POP3 password for ${f.user} at ${f.host}` });
    fetch.push({ ...f, password, caFile: smarthost?.caFile ?? (str(flags, 'tls-ca-file') ? path.resolve(str(flags, 'tls-ca-file')!) : undefined) });
  }
  if (needs.fetch && !fetchUrls.length && discovery?.pop3 && user && smarthost?.auth?.kind === 'password') {
    if (await ask.confirm(`Fetch ${user}'s mailbox from ${discovery.pop3.host}:${discovery.pop3.port} with the same password?`, false)) {
      fetch.push({ host: discovery.pop3.host, port: discovery.pop3.port, tls: 'implicit', user, password: smarthost.auth.password });
    } else {
      notes.push(`a POP3 server was found: add --fetch pop3s://${user}@${discovery.pop3.host}:${discovery.pop3.port} to fetch that mailbox`);
    }
  }

  const maildirFlag = str(flags, 'maildir');
  const dovecotLmtp = '/var/run/dovecot/lmtp';
  let delivery: Answers['delivery'];
  if (maildirFlag) delivery = { kind: 'maildir', maildir: maildirFlag };
  else if ((preset.name === 'pi-home' || preset.name === 'internet-site') && fs.existsSync(dovecotLmtp)) delivery = { kind: 'lmtp', lmtp: dovecotLmtp };
  else if (preset.name === 'pi-home') delivery = { kind: 'maildir', maildir: '~/Maildir' };
  else delivery = { kind: 'mbox' };

  const listen = list(flags, 'listen');
  for (const l of listen) if (!parseListen(l)) throw new UsageError(`setup: --listen "${l}" is not HOST:PORT (e.g. 127.0.0.1:2525)`);

  const certFlag = str(flags, 'tls-cert');
  const keyFlag = str(flags, 'tls-key');
  if (Boolean(certFlag) !== Boolean(keyFlag)) throw new UsageError('setup: give --tls-cert and --tls-key together');

  const answers: Answers = {
    paths,
    hostname,
    runUser: 'tidemail',
    listen: listen.length ? listen : undefined,
    smarthost,
    from: user?.includes('@') ? user : undefined,
    domain,
    lan,
    lanAddress,
    admin,
    localUser,
    delivery,
    fetch,
    wan: str(flags, 'wan') ?? 'wan',
    tls: needs.tls
      ? certFlag ? { cert: readableFile('--tls-cert', certFlag), key: readableFile('--tls-key', keyFlag!) } : { cert: path.join(paths.tls, 'cert.pem'), key: path.join(paths.tls, 'key.pem') }
      : undefined,
    ipv6Loopback: Object.values(os.networkInterfaces()).some((l) => l?.some((i) => i.address === '::1')),
  };
  return { answers, discovery, notes };
}
