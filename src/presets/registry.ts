// The presets: what each one asks for and the configuration it writes (tidemail.toml, routes/,
// aliases, secrets). `tidemail presets` lists them; `tidemail setup NAME` applies one. The
// walk-through for users is presets/README.md; keep the two in step.

import path from 'node:path';
import type { TlsMode } from '../routes/profile.js';
import type { ProviderName } from './discover.js';
import { TomlText, tomlKey, type PlannedFile } from './writer.js';

/** Where a setup writes, under --root (default "/"). */
export interface SetupPaths {
  root: string;
  /** DIR/etc/tidemail */
  etc: string;
  config: string;
  routes: string;
  secrets: string;
  tls: string;
  aliases: string;
  /** DIR/var/lib/tidemail */
  state: string;
}

export function setupPaths(root: string): SetupPaths {
  const etc = path.join(root, 'etc', 'tidemail');
  return {
    root,
    etc,
    config: path.join(etc, 'tidemail.toml'),
    routes: path.join(etc, 'routes'),
    secrets: path.join(etc, 'secrets'),
    tls: path.join(etc, 'tls'),
    aliases: path.join(etc, 'aliases'),
    state: path.join(root, 'var', 'lib', 'tidemail'),
  };
}

export type SmarthostAuth =
  | { kind: 'password'; user: string; password: string }
  | {
      kind: 'oauth2';
      user: string;
      tokenUrl: string;
      clientId: string;
      scope?: string;
      mechanism: 'XOAUTH2' | 'OAUTHBEARER';
      refreshToken: string;
      clientSecret?: string;
    };

export interface SmarthostAnswer {
  /** Route file name: the provider, or "isp". */
  name: string;
  provider?: ProviderName;
  host: string;
  port: number;
  tls: TlsMode;
  caFile?: string;
  auth: SmarthostAuth | null;
  /** How it was chosen: "--smarthost", "DNS SRV …", "provider template …". */
  source: string;
  messagesPerConnection?: number;
}

export interface FetchAnswer {
  host: string;
  port: number;
  tls: 'implicit' | 'starttls';
  user: string;
  password: string;
  caFile?: string;
}

/** Everything a preset's build needs, collected from flags, questions and discovery. */
export interface Answers {
  paths: SetupPaths;
  hostname: string;
  /** The run-as user written to `user = …`. */
  runUser: string;
  /** --listen: replaces the preset's listeners (tests, unusual ports). */
  listen?: string[];
  smarthost?: SmarthostAnswer;
  /** The address local senders (root, cron, LAN boxes) leave as. */
  from?: string;
  domain?: string;
  lan?: string;
  /** This machine's address inside --lan, to listen on. */
  lanAddress?: string;
  /** Where root's and postmaster's mail goes. */
  admin?: string;
  /** The person whose mailbox local and fetched mail lands in. */
  localUser?: string;
  delivery: { kind: 'maildir'; maildir: string } | { kind: 'mbox' } | { kind: 'lmtp'; lmtp: string };
  fetch: FetchAnswer[];
  /** The WAN interface whose state takes the router's route online. */
  wan: string;
  /** Set by setup when the preset needs TLS: given with --tls-cert/--tls-key, or self-signed. */
  tls?: { cert: string; key: string };
  /** Whether ::1 exists here (laptop: do not listen on an address the kernel does not have). */
  ipv6Loopback: boolean;
}

type Need = 'required' | 'optional' | 'no';

export interface Preset {
  name: string;
  summary: string;
  /** Longer text for `tidemail presets NAME`. */
  details: string;
  needs: {
    smarthost: Need;
    /** --user: the login and the address local senders leave as. */
    user: Need;
    lan: Need;
    domain: Need;
    admin: Need;
    localUser: Need;
    fetch: boolean;
    tls: boolean;
  };
  build(a: Answers): SetupPlan;
}

export interface SetupPlan {
  files: PlannedFile[];
  /** Printed after "done": what to do next. */
  nextSteps: string[];
}

const LOOPBACK_NETS = ['127.0.0.0/8', '::1/128'];

function header(a: Answers, preset: string, text: string): TomlText {
  return new TomlText()
    .comment(`tidemail configuration written by \`tidemail setup ${preset}\`.`)
    .comment(text)
    .comment('Check it with `tidemail config check`; the daemon rereads it on SIGHUP.')
    .blank()
    .set('hostname', a.hostname)
    .set('state_dir', a.paths.state)
    .set('user', a.runUser, 'the daemon drops root to this user after binding its ports; a small root helper delivers local mail as each user');
}

function loopbackListen(port: number, a: Answers): string[] {
  return a.ipv6Loopback ? [`127.0.0.1:${port}`, `[::1]:${port}`] : [`127.0.0.1:${port}`];
}

function localSection(t: TomlText, a: Answers, domains: string[]): void {
  t.table('local');
  t.set('domains', [...new Set(domains.map((d) => d.toLowerCase()))]);
  t.set('aliases', a.paths.aliases, 'sendmail format; run `newaliases` after editing');
  t.set('delivery', a.delivery.kind);
  if (a.delivery.kind === 'maildir') t.set('maildir', a.delivery.maildir, '~ = the user\'s home, %u = user name');
  if (a.delivery.kind === 'lmtp') t.set('lmtp', a.delivery.lmtp, 'Dovecot\'s LMTP service writes as each user');
}

function aliasesFile(entries: [string, string][], note: string): string {
  const lines = ['# Mail aliases (sendmail format), written by `tidemail setup`.', `# ${note}`, '# After editing run `newaliases` (the daemon picks the new table up by itself).', ''];
  for (const [name, target] of entries) lines.push(`${name}: ${target}`);
  return lines.join('\n') + '\n';
}

/** The smarthost route file and its secrets. */
function smarthostRoute(a: Answers, opts: { online?: (t: TomlText) => void; small?: boolean }): PlannedFile[] {
  const s = a.smarthost!;
  const t = new TomlText()
    .comment(`Outgoing mail through ${s.provider ?? s.host}, written by \`tidemail setup\`.`)
    .comment(`Server found by: ${s.source}.`)
    .blank()
    .set('smarthost', `${s.host}:${s.port}`)
    .set('tls', s.tls, s.tls === 'none' ? 'no encryption: only for a smarthost on a trusted network' : 'the certificate is verified');
  if (s.caFile) t.set('tls_ca_file', s.caFile, 'an extra CA trusted for this server');
  // --tls none with a login was asked for explicitly; the loader refuses it without this line.
  if (s.tls === 'none' && s.auth) t.set('allow_plain_auth', true, 'the login goes unencrypted: only on a trusted network');
  const files: PlannedFile[] = [];
  const secret = (name: string, content: string) => {
    const p = path.join(a.paths.secrets, name);
    files.push({ path: p, content: `${content}\n`, secret: true });
    return p;
  };
  if (s.auth?.kind === 'password') {
    t.set(['auth', 'user'], s.auth.user);
    t.set(['auth', 'password_file'], secret(s.name, s.auth.password), 'mode 0600');
  } else if (s.auth?.kind === 'oauth2') {
    t.set(['auth', 'user'], s.auth.user);
    t.set(['auth', 'oauth2', 'mechanism'], s.auth.mechanism);
    t.set(['auth', 'oauth2', 'token_url'], s.auth.tokenUrl);
    t.set(['auth', 'oauth2', 'client_id'], s.auth.clientId);
    if (s.auth.clientSecret !== undefined) t.set(['auth', 'oauth2', 'client_secret_file'], secret(`${s.name}.client-secret`, s.auth.clientSecret), 'mode 0600');
    t.set(['auth', 'oauth2', 'refresh_token_file'], secret(`${s.name}.token`, s.auth.refreshToken), 'mode 0600; rewritten when the provider rotates it');
    if (s.auth.scope) t.set(['auth', 'oauth2', 'scope'], s.auth.scope);
  }
  if (a.from) {
    t.blank().comment('Local senders (root, cron, LAN devices) leave with your address, so the provider accepts them:');
    t.set(['rewrite', 'envelope_from'], a.from).set(['rewrite', 'header_from'], a.from);
  }
  if (opts.online) {
    t.blank();
    opts.online(t);
  }
  if (opts.small) t.blank().set('max_connections', 1, 'small router: one connection at a time');
  if (s.messagesPerConnection) t.set('messages_per_connection', s.messagesPerConnection);
  if (a.fetch.length) {
    a.fetch.forEach((f, i) => {
      t.blank().comment(i === 0 ? 'POP3 mailboxes fetched while this route is online (and on `tidemail fetch`):' : '');
      t.arrayTable('fetch');
      t.set('server', `${f.host}:${f.port}`).set('tls', f.tls).set('user', f.user);
      t.set('password_file', secret(`pop-${i + 1}`, f.password), 'mode 0600');
      if (f.caFile) t.set('tls_ca_file', f.caFile);
      t.set('deliver_to', [a.localUser ?? 'root']).set('keep', false, 'true leaves the mail on the server');
    });
  }
  files.unshift({ path: path.join(a.paths.routes, `${s.name}.toml`), content: t.toString() });
  return files;
}

/** Root, postmaster and the mailer daemon reach a person. */
function adminAliases(admin: string): [string, string][] {
  return [['postmaster', 'root'], ['MAILER-DAEMON', 'postmaster'], ['abuse', 'postmaster'], ['root', admin]];
}

function mainFile(a: Answers, t: TomlText): PlannedFile {
  return { path: a.paths.config, content: t.toString() };
}

const laptop: Preset = {
  name: 'laptop',
  summary: 'system sendmail replacement: local submission only, smarthost out whenever Wi-Fi or ethernet is up',
  details: `Listens on 127.0.0.1 (and ::1) only. Everything not for this machine goes to your provider's
submission server (--smarthost, or found from --user). The route is online while the machine has a
route to the Internet (Wi-Fi, ethernet, tethering) and the server answers; the NetworkManager hook
in packaging/hooks flushes the queue the moment a connection comes up. Mail to root (cron,
unattended-upgrades, smartd) goes to --admin (default: --user), and local senders leave as --user.`,
  needs: { smarthost: 'required', user: 'required', lan: 'no', domain: 'no', admin: 'optional', localUser: 'optional', fetch: false, tls: false },
  build(a) {
    const s = a.smarthost!;
    const t = header(a, 'laptop', 'A laptop: programs hand mail to sendmail; it leaves through the smarthost when online.');
    t.table('smtp').set('listen', a.listen ?? loopbackListen(25, a)).set('trusted_networks', LOOPBACK_NETS);
    localSection(t, a, [a.hostname, 'localhost']);
    t.table('queue').set('no_route_recheck', '30m', 'besides link events (the NetworkManager hook)');
    const admin = a.admin ?? a.from ?? 'root';
    const aliases: [string, string][] = adminAliases(admin);
    if (a.localUser) aliases.push([a.localUser, admin]);
    return {
      files: [
        mainFile(a, t),
        ...smarthostRoute(a, {
          online: (r) => {
            r.comment('Online while there is a route to the Internet (any interface) and the server answers.');
            r.set(['online', 'command'], 'ip route get 1.1.1.1 >/dev/null 2>&1 || ip -6 route get 2606:4700:4700::1111 >/dev/null 2>&1');
            r.set(['online', 'tcp'], `${s.host}:${s.port}`);
          },
        }),
        { path: a.paths.aliases, content: aliasesFile(aliases, `root's mail (cron, system tools) goes to ${admin}.`) },
      ],
      nextSteps: [
        'install the link hook so mail leaves the moment Wi-Fi/ethernet comes up: cp packaging/hooks/networkmanager-dispatcher /etc/NetworkManager/dispatcher.d/90-tidemail && chmod 755 /etc/NetworkManager/dispatcher.d/90-tidemail',
      ],
    };
  },
};

const router: Preset = {
  name: 'router',
  summary: 'OpenWrt router: accepts mail from the LAN, relays via the ISP or a provider when the WAN is up',
  details: `Listens on loopback and the router's LAN address (found from --lan), lets the LAN relay, and
sends through --smarthost while the WAN interface (--wan, default "wan") is up; the OpenWrt hotplug
hook in packaging/hooks flushes the queue on WAN up. Small memory settings: 10 clients, 10 MB
messages, one outgoing connection. Mail to root goes to --admin (default: --user).`,
  needs: { smarthost: 'required', user: 'required', lan: 'required', domain: 'optional', admin: 'optional', localUser: 'no', fetch: false, tls: false },
  build(a) {
    const t = header(a, 'router', 'A home router: the LAN hands mail in; it leaves through the smarthost while the WAN is up.');
    const listen = a.listen ?? [...loopbackListen(25, a), ...(a.lanAddress ? [a.lanAddress.includes(':') ? `[${a.lanAddress}]:25` : `${a.lanAddress}:25`] : [])];
    t.table('smtp').set('listen', listen).set('trusted_networks', [...LOOPBACK_NETS, a.lan!], 'may relay');
    t.set('max_clients', 10, 'small memory').set('max_message_size', '10M').set('max_connections_per_ip', 5);
    localSection(t, a, [a.hostname, 'localhost', ...(a.domain ? [a.domain] : [])]);
    const admin = a.admin ?? a.from ?? 'root';
    return {
      files: [
        mainFile(a, t),
        ...smarthostRoute(a, {
          small: true,
          online: (r) => {
            r.comment('Online while the WAN interface is up (on OpenWrt a logical network name is asked of ubus).');
            r.set(['online', 'interface'], a.wan);
          },
        }),
        { path: a.paths.aliases, content: aliasesFile(adminAliases(admin), `root's mail goes to ${admin}.`) },
      ],
      nextSteps: [
        'install the hotplug hook so the queue is flushed on WAN up: cp packaging/hooks/openwrt-hotplug /etc/hotplug.d/iface/90-tidemail',
        `point LAN devices (printers, NAS, cameras) at ${a.lanAddress ?? 'this router'} port 25 as their SMTP server, without login`,
      ],
    };
  },
};

const piHome: Preset = {
  name: 'pi-home',
  summary: 'Raspberry Pi home server: local Maildir/LMTP delivery, POP3 fetch, smarthost out, LAN relay',
  details: `Delivers every local user's mail to their own ~/Maildir, written as that user by a small
root helper while the daemon runs as tidemail, or to Dovecot over LMTP when Dovecot's LMTP socket
exists (serve it by IMAP). root's and postmaster's mail goes to --local-user. Fetches the mailboxes
given with --fetch pop3s://USER@HOST whenever the smarthost route is online and delivers them to
--local-user. Accepts mail from --lan and relays it through --smarthost.`,
  needs: { smarthost: 'required', user: 'required', lan: 'required', domain: 'optional', admin: 'optional', localUser: 'required', fetch: true, tls: false },
  build(a) {
    const t = header(a, 'pi-home', 'A home server: mail for the household is delivered here; the rest leaves through the smarthost.');
    const listen = a.listen ?? [...loopbackListen(25, a), ...(a.lanAddress ? [a.lanAddress.includes(':') ? `[${a.lanAddress}]:25` : `${a.lanAddress}:25`] : [])];
    t.table('smtp').set('listen', listen).set('trusted_networks', [...LOOPBACK_NETS, a.lan!], 'may relay');
    localSection(t, a, [a.hostname, 'localhost', ...(a.domain ? [a.domain] : [])]);
    const admin = a.admin ?? a.localUser!;
    return {
      files: [
        mainFile(a, t),
        ...smarthostRoute(a, {}),
        { path: a.paths.aliases, content: aliasesFile(adminAliases(admin), `root's mail goes to ${admin}.`) },
      ],
      nextSteps: [
        a.delivery.kind === 'lmtp' ? 'Dovecot delivers into the mailboxes; read them by IMAP' : `each user's mail lands in their own ${a.delivery.kind === 'maildir' ? a.delivery.maildir : 'mailbox'}, root's in ${a.localUser}'s`,
        ...(a.fetch.length ? ['fetch now (instead of waiting for the route to come online): tidemail fetch'] : []),
      ],
    };
  },
};

const satellite: Preset = {
  name: 'satellite',
  summary: 'null client: everything, local mail included, goes to one smarthost',
  details: `Debian's "satellite system": nothing is delivered on this machine. Mail to any local
address (root, cron, users) is sent to --admin, and everything leaves through --smarthost, always
online. Login only when --user is given (a smarthost on your network may not need one).`,
  needs: { smarthost: 'required', user: 'optional', lan: 'no', domain: 'no', admin: 'required', localUser: 'no', fetch: false, tls: false },
  build(a) {
    const t = header(a, 'satellite', 'A null client: no local mailboxes; all mail goes to the smarthost.');
    t.table('smtp').set('listen', a.listen ?? loopbackListen(25, a)).set('trusted_networks', LOOPBACK_NETS);
    t.table('local');
    t.comment('No local domains: every local address is sent on to the admin.');
    t.set('domains', []);
    t.set('aliases', '', 'no aliases file: the catch-all below takes every local address');
    for (const domain of [a.hostname, 'localhost']) {
      t.table(`local.virtual.${tomlKey(domain)}`).set('*', a.admin!, 'every address here goes to the admin');
    }
    return {
      files: [mainFile(a, t), ...smarthostRoute(a, {})],
      nextSteps: [],
    };
  },
};

const localOnly: Preset = {
  name: 'local-only',
  summary: 'no network delivery: local mailboxes only (the embedded default, written out)',
  details: `Listens on loopback only and delivers to local mailboxes. Mail for other hosts waits in the
queue until you add a route (see routes/ for templates) — nothing leaves this machine.`,
  needs: { smarthost: 'no', user: 'no', lan: 'no', domain: 'no', admin: 'optional', localUser: 'no', fetch: false, tls: false },
  build(a) {
    const t = header(a, 'local-only', 'Local mail only: nothing leaves this machine until a route is added under routes/.');
    t.table('smtp').set('listen', a.listen ?? loopbackListen(25, a)).set('trusted_networks', LOOPBACK_NETS);
    localSection(t, a, [a.hostname, 'localhost']);
    const admin = a.admin;
    const aliases: [string, string][] = [['postmaster', 'root'], ['MAILER-DAEMON', 'postmaster'], ...(admin ? [['root', admin] as [string, string]] : [])];
    return {
      files: [mainFile(a, t), { path: a.paths.aliases, content: aliasesFile(aliases, admin ? `root's mail goes to ${admin}.` : 'root reads its own mail.') }],
      nextSteps: ['to send mail out later: tidemail setup laptop|satellite … --force, or copy a template from routes/ into routes/'],
    };
  },
};

const internetSite: Preset = {
  name: 'internet-site',
  summary: 'direct MX delivery with DKIM signing, TLS, greylisting and DNSBL (static IP and PTR needed)',
  details: `Receives mail for --domain on port 25 from the whole Internet and delivers it locally;
sends directly to each recipient's MX. Submission on 587 (STARTTLS) and 465 (TLS) for your own
clients, with AUTH (add users with \`tidemail user add NAME\`). TLS uses --tls-cert/--tls-key, or a
self-signed certificate until you have a real one. Checks: DNSBL and greylisting at RCPT;
header syntax, SPF/DKIM/DMARC and DKIM signing at end of DATA. Needs a static IP whose PTR is
the host name, and MX/SPF/DKIM/DMARC records (\`tidemail check\` tells you which are missing).`,
  needs: { smarthost: 'no', user: 'no', lan: 'optional', domain: 'required', admin: 'required', localUser: 'no', fetch: false, tls: true },
  build(a) {
    const t = header(a, 'internet-site', `A mail server for ${a.domain}: receives from the Internet, delivers directly to MX hosts.`);
    t.table('smtp');
    t.set('listen', a.listen ?? ['0.0.0.0:25'], 'add "[::]:25" too when this host has public IPv6');
    t.set('submission', ['0.0.0.0:587'], 'your clients: STARTTLS, then AUTH');
    t.set('smtps', ['0.0.0.0:465'], 'your clients: TLS from the first byte, then AUTH');
    t.set('trusted_networks', [...LOOPBACK_NETS, ...(a.lan ? [a.lan] : [])], 'may relay without AUTH');
    t.set('tls_cert', a.tls!.cert).set('tls_key', a.tls!.key);
    t.set('users_file', 'users', 'AUTH users: tidemail user add NAME');
    localSection(t, a, [a.domain!, a.hostname, 'localhost']);
    t.table('checks');
    t.set('rcpt', ['relay', 'recipients', 'dnsbl', 'greylist']);
    t.set('data', ['syntax', 'spf-dkim-dmarc', 'dkim-sign']);
    t.table('checks.dnsbl');
    t.comment('Spamhaus refuses queries that come through big public resolvers (8.8.8.8, 1.1.1.1):');
    t.comment('use your own resolver, and check their terms of use for your volume.');
    t.set('zones', ['zen.spamhaus.org']);
    t.table('checks.dkim-sign');
    t.comment(`The key was made by \`tidemail dkim keygen ${a.domain}\`; publish the TXT record it printed`);
    t.comment(`as ${DKIM_SELECTOR}._domainkey.${a.domain}.`);
    t.set('selector', DKIM_SELECTOR);
    t.set('keys', { [a.domain!]: dkimKeyFile(a) });
    const route = new TomlText()
      .comment('Direct delivery to each recipient domain\'s MX hosts, written by `tidemail setup internet-site`.')
      .comment('Opportunistic STARTTLS; MTA-STS policies are fetched and enforced.')
      .blank()
      .set('kind', 'mx')
      .set('tls', 'opportunistic');
    return {
      files: [
        mainFile(a, t),
        { path: path.join(a.paths.routes, 'mx.toml'), content: route.toString() },
        { path: a.paths.aliases, content: aliasesFile(adminAliases(a.admin!), `root's, postmaster's and abuse's mail goes to ${a.admin}.`) },
        { path: path.join(a.paths.etc, 'users'), content: '', secret: true },
      ],
      nextSteps: [
        `DNS for ${a.domain}: MX → ${a.hostname}; A/AAAA of ${a.hostname} → this host; PTR of this host's address → ${a.hostname}`,
        `SPF: ${a.domain} TXT "v=spf1 mx -all"; DMARC: _dmarc.${a.domain} TXT "v=DMARC1; p=none; rua=mailto:postmaster@${a.domain}"`,
        `DKIM: publish the TXT record printed above as ${DKIM_SELECTOR}._domainkey.${a.domain}`,
        'your mail clients: tidemail user add NAME (then log in on port 587 or 465)',
        'replace the self-signed certificate with a real one (e.g. from Let\'s Encrypt) in tls_cert/tls_key',
        'then run `tidemail check` to see what is still missing',
      ],
    };
  },
};

export const DKIM_SELECTOR = 'tidemail';

/** Where `tidemail dkim keygen` puts the domain's key (its default: <config dir>/dkim/DOMAIN.key). */
export function dkimKeyFile(a: Answers): string {
  return path.join(a.paths.etc, 'dkim', `${a.domain!.toLowerCase()}.key`);
}

export const PRESETS: readonly Preset[] = [laptop, router, piHome, satellite, localOnly, internetSite];

export function findPreset(name: string): Preset | undefined {
  return PRESETS.find((p) => p.name === name);
}
