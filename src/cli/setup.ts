// `tidemail setup PRESET [flags]` writes a working configuration for one of the presets, and
// `tidemail presets [NAME]` lists them. Flags fill the blanks; what is missing is asked on a
// terminal and is a usage error (64, naming the flag) otherwise. Nothing existing is
// overwritten without --force, and then the old config dir is kept as a timestamped backup.
// The new config is built beside the old one and switched in at the end (presets/switch.ts).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NetworkList, parseCidr } from '../config/cidr.js';
import { parseListen } from '../config/load.js';
import { ConfigError, UsageError } from '../errors.js';
import { SETUP_FLAGS, usageLine } from './usage.js';
import { lookupUser } from '../local/users.js';
import { chownTree, isRoot, resolveRunUser } from '../privileges.js';
import { discoverServers, loadProviderTemplate, PROVIDERS, type Discovery, type ProviderName } from '../presets/discover.js';
import { Asker } from '../presets/prompt.js';
import { DKIM_SELECTOR, dkimKeyFile, findPreset, PRESETS, setupPaths, type Answers, type FetchAnswer, type Preset, type SmarthostAnswer } from '../presets/registry.js';
import { abandonStaged, commitConfigDir, finishInterruptedSwitch, stageConfigDir, stagedPath, switchFailure, type Staged } from '../presets/switch.js';
import { makePrivateDir, writePlannedFiles, type Owner, type PlannedFile } from '../presets/writer.js';
import { compileAliases } from '../local/aliases.js';
import { parseHostPort } from '../routes/load.js';
import type { TlsMode } from '../routes/profile.js';
import { EX } from './exit.js';

const VALUE_FLAGS = new Set([
  'smarthost', 'tls', 'tls-ca-file', 'user', 'password-file', 'client-id', 'client-secret-file', 'domain', 'lan', 'admin',
  'fetch', 'fetch-password-file', 'local-user', 'maildir', 'hostname', 'listen', 'tls-cert', 'tls-key', 'dns-server', 'root', 'wan',
]);
const BOOLEAN_FLAGS = new Set(['oauth2', 'no-auth', 'force']);
const REPEATABLE = new Set(['fetch', 'fetch-password-file', 'listen']);

type Flags = Record<string, string | string[] | boolean | undefined>;

function parseFlags(argv: string[]): { positional: string[]; flags: Flags } {
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

const str = (f: Flags, k: string) => f[k] as string | undefined;
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

interface Collected {
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

async function collect(preset: Preset, flags: Flags, ask: Asker): Promise<Collected> {
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

/** The run user's uid/gid when we are root (setup gives it the state dir and secrets). */
function runOwner(runUser: string): { owner: Owner | null; name: string } {
  if (!isRoot()) return { owner: null, name: os.userInfo().username };
  const u = resolveRunUser(runUser)!;
  return { owner: { uid: u.uid, gid: u.gid }, name: u.name };
}

/**
 * Runs `fn` (a subcommand that prints the paths it wrote) with its stdout shown as the paths
 * will be after the switch, not the staging dir's.
 */
async function withLivePaths(staged: Staged, fn: () => Promise<number>): Promise<number> {
  const write = process.stdout.write.bind(process.stdout);
  let text = '';
  process.stdout.write = ((chunk: string | Uint8Array) => {
    text += chunk.toString();
    return true;
  }) as typeof process.stdout.write;
  try {
    return await fn();
  } finally {
    process.stdout.write = write;
    write(text.split(staged.dir).join(staged.live));
  }
}

/** Makes cert.pem + key.pem in the staged tls dir unless both exist; returns the exit code of the generator. */
async function makeSelfSigned(staged: Staged, dir: string, hostname: string, owner: Owner | null, out: (l: string) => void): Promise<number> {
  const at = stagedPath(staged, dir);
  const key = path.join(at, 'key.pem');
  if (fs.existsSync(path.join(at, 'cert.pem')) && fs.existsSync(key)) {
    out(`  kept the certificate in ${dir}`);
    return EX.OK;
  }
  // They may be hard links to the old config's files: openssl writes in place, so unlink first.
  for (const n of ['cert.pem', 'key.pem']) fs.rmSync(path.join(at, n), { force: true });
  const { runTls } = await import('./tls.js');
  const code = await withLivePaths(staged, () => runTls(['selfsigned', '--out', at, '--name', hostname, '--force']));
  if (code !== EX.OK) return code;
  if (owner) fs.chownSync(key, owner.uid, owner.gid); // the daemon rereads it on SIGHUP, after dropping root
  out(`  made a self-signed certificate for ${hostname} in ${dir} (replace it with a real one)`);
  return EX.OK;
}

/** The DKIM key the dkim-sign check needs (kept when it exists: its DNS record may be published). */
async function makeDkimKey(staged: Staged, a: Answers, configPath: string, out: (l: string) => void): Promise<number> {
  const file = stagedPath(staged, dkimKeyFile(a));
  if (fs.existsSync(file)) {
    out(`  kept the DKIM key ${dkimKeyFile(a)}`);
    return EX.OK;
  }
  const { runDkim } = await import('./dkim.js');
  out('  making the DKIM key (setup has already put the config lines it mentions into the config):');
  return withLivePaths(staged, () => runDkim(['keygen', a.domain!, '--selector', DKIM_SELECTOR, '--out', path.dirname(file), '--config', stagedPath(staged, configPath)]));
}

export async function runSetup(argv: string[]): Promise<number> {
  const { positional, flags } = parseFlags(argv);
  const name = positional[0];
  if (!name) throw new UsageError(`${usageLine('setup')}   (presets: ${PRESETS.map((p) => p.name).join(', ')}; \`tidemail presets\` describes them)\n${SETUP_FLAGS}`);
  if (positional.length > 1) throw new UsageError(`setup: unexpected argument "${positional[1]}"`);
  const preset = findPreset(name);
  if (!preset) throw new UsageError(`setup: unknown preset "${name}"; use one of ${PRESETS.map((p) => p.name).join(', ')}`);

  const paths = setupPaths(path.resolve(str(flags, 'root') ?? '/'));
  // A setup killed during its switch left the complete new config beside a missing live one.
  for (const m of finishInterruptedSwitch(paths.etc)) process.stderr.write(`tidemail: ${m}\n`);
  const exists = fs.existsSync(paths.config);
  if (exists && !flags.force) {
    process.stderr.write(`tidemail: ${paths.config} exists; not overwriting it\n  fix: pass --force to replace it (the old ${paths.etc} is kept as ${path.basename(paths.etc)}.backup-TIMESTAMP)\n`);
    return EX.CANTCREAT;
  }

  // Find out before asking anything whether we may write there at all. A --root DIR that does
  // not exist yet is made, like `install -d` (an image being assembled, a fresh mount point).
  if (paths.root !== '/') {
    try {
      fs.mkdirSync(paths.root, { recursive: true, mode: 0o755 });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const denied = e.code === 'EACCES' || e.code === 'EPERM' || e.code === 'EROFS';
      process.stderr.write(`tidemail: cannot create --root ${paths.root}: ${e.code ?? e.message}${e.path && e.path !== paths.root ? ` (${e.path})` : ''}\n  fix: ${denied ? 'pick a DIR you may write, or run setup as root' : 'pick a DIR whose parents are directories'}\n`);
      return denied ? EX.NOPERM : EX.CANTCREAT;
    }
  }
  let writable = paths.etc; // the nearest dir that exists below the root
  while (!fs.existsSync(writable) && path.dirname(writable) !== writable) writable = path.dirname(writable);
  try {
    fs.accessSync(writable, fs.constants.W_OK);
  } catch (err) {
    // As root the cause is not privileges (a read-only file system, an immutable dir): say it.
    const why = isRoot() ? ` (${(err as NodeJS.ErrnoException).code}: ${writable} is not writable even for root)` : '';
    const fix = isRoot() ? `make ${writable} writable (read-only mount? chattr -i?), or pass --root DIR to write somewhere else` : `run setup as root (sudo tidemail setup ${preset.name} …), or pass --root DIR to write somewhere else`;
    process.stderr.write(`tidemail: cannot write ${paths.etc}${why}\n  fix: ${fix}\n`);
    return EX.NOPERM;
  }

  const ask = Asker.forStdin(preset.name);
  let collected: Collected;
  try {
    collected = await collect(preset, flags, ask);
  } finally {
    ask.close();
  }
  const { answers, notes } = collected;
  const plan = preset.build(answers);
  const { owner, name: ownerName } = runOwner(answers.runUser);
  const out = (line: string) => process.stdout.write(`${line}\n`);
  out(`tidemail setup ${preset.name}: ${preset.summary}`);
  for (const n of notes) out(`  note: ${n}`);

  // Everything is written into the staged dir; the live one changes only at the switch.
  let staged: Staged | undefined;
  let backup: string | null;
  try {
    staged = stageConfigDir(paths.etc, { dropRoutes: exists });
    const code = await writeStaged(staged, preset, answers, plan.files, owner, out);
    if (code !== EX.OK) {
      abandonStaged(staged);
      return code;
    }
    fs.mkdirSync(path.dirname(paths.state), { recursive: true, mode: 0o755 }); // /var/lib: others must pass through
    fs.mkdirSync(paths.state, { recursive: true, mode: 0o750 });
    if (owner && isRoot()) chownTree(paths.state, lookupUser(owner.uid)!);
    backup = commitConfigDir(staged, { backup: exists });
  } catch (err) {
    if (staged) abandonStaged(staged);
    const why = switchFailure(err, paths.etc);
    if (!why) throw err;
    process.stderr.write(`tidemail: ${why}\n`);
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EACCES' || code === 'EPERM' ? EX.NOPERM : EX.CANTCREAT;
  }
  for (const f of plan.files) out(`  wrote ${f.path}${f.secret ? ` (mode 0600, owner ${ownerName})` : ''}`);
  if (backup) out(`  backup: the old configuration is kept in ${backup}`);
  out(`  state dir ${paths.state} (owner ${ownerName})`);

  // The same validation as `tidemail config check`: a preset that writes a config the loader
  // refuses is a bug, and the user should hear it now rather than at daemon start.
  const { runConfig } = await import('./config.js');
  let checked: number;
  try {
    checked = await runConfig(['check', '--config', paths.config]);
  } catch (err) {
    // The new config is live already; say how to go back to the old one.
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`tidemail: configuration error: ${err.message}\n`);
    if (backup) process.stderr.write(`  the previous configuration is in ${backup}; to go back: rm -r ${paths.etc} && mv ${backup} ${paths.etc}\n`);
    return EX.CONFIG;
  }
  if (checked !== EX.OK) return checked;

  out('');
  out('next:');
  for (const step of plan.nextSteps) out(`  - ${step}`);
  const rootFlag = paths.root === '/' ? '' : ` --config ${paths.config}`;
  out(`  - start the daemon: systemctl restart tidemail (or: tidemail daemon${rootFlag})`);
  const testTo = answers.admin ?? answers.from ?? answers.localUser ?? 'root';
  out(`  - send a test message: echo "it works" | sendmail${rootFlag ? ` -C ${paths.config}` : ''} ${testTo}; then tidemail check and mailq`);
  return EX.OK;
}

/** The preset's files, certificate, DKIM key and compiled aliases, in the staged config dir. */
async function writeStaged(staged: Staged, preset: Preset, answers: Answers, files: PlannedFile[], owner: Owner | null, out: (l: string) => void): Promise<number> {
  const paths = answers.paths;
  const at = (p: string) => stagedPath(staged, p);
  fs.mkdirSync(at(paths.routes), { recursive: true, mode: 0o755 });
  if (files.some((f) => f.secret && path.dirname(f.path) === paths.secrets)) makePrivateDir(at(paths.secrets), owner);
  // An empty secret is a placeholder (the AUTH users file): one carried over from the old config
  // keeps its content — `--force` must not log every mail client out.
  const kept = files.filter((f) => f.secret && f.content === '' && fs.existsSync(at(f.path)) && fs.statSync(at(f.path)).size > 0);
  writePlannedFiles(files.filter((f) => !kept.includes(f)).map((f) => ({ ...f, path: at(f.path) })), owner);
  for (const f of kept) out(`  kept ${f.path} (it is not empty)`);

  if (preset.needs.tls && answers.tls && answers.tls.cert === path.join(paths.tls, 'cert.pem')) {
    const code = await makeSelfSigned(staged, paths.tls, answers.hostname, owner, out);
    if (code !== EX.OK) return code;
  }
  if (preset.name === 'internet-site') {
    const code = await makeDkimKey(staged, answers, paths.config, out);
    if (code !== EX.OK) return code;
  }
  // newaliases, on the staged text; the table records the live path it will have.
  if (files.some((f) => f.path === paths.aliases)) {
    const { count, warnings } = await compileAliases(at(paths.aliases), paths.aliases);
    for (const w of warnings) out(`  warning: ${w}`);
    out(`  ${paths.aliases}: ${count} aliases`);
  }
  return EX.OK;
}

export async function runPresets(argv: string[]): Promise<number> {
  const name = argv[0];
  if (!name) {
    const width = Math.max(...PRESETS.map((p) => p.name.length));
    for (const p of PRESETS) process.stdout.write(`${p.name.padEnd(width)}  ${p.summary}\n`);
    process.stdout.write('\n`tidemail presets NAME` describes one; `tidemail setup NAME [flags]` applies it.\n');
    return EX.OK;
  }
  const p = findPreset(name);
  if (!p) throw new UsageError(`presets: unknown preset "${name}"; use one of ${PRESETS.map((x) => x.name).join(', ')}`);
  const flagOf: Record<string, string> = { smarthost: '--smarthost', user: '--user', lan: '--lan', domain: '--domain', admin: '--admin', localUser: '--local-user' };
  const needed = Object.entries(flagOf).filter(([k]) => p.needs[k as keyof typeof flagOf & keyof Preset['needs']] === 'required').map(([, f]) => f);
  const optional = Object.entries(flagOf).filter(([k]) => p.needs[k as keyof typeof flagOf & keyof Preset['needs']] === 'optional').map(([, f]) => f);
  if (p.needs.fetch) optional.push('--fetch');
  process.stdout.write(`${p.name}: ${p.summary}\n\n${p.details}\n\nneeds: ${needed.join(' ') || 'nothing'}${optional.length ? `; optional: ${optional.join(' ')}` : ''}\n\n${SETUP_FLAGS}\n`);
  return EX.OK;
}
