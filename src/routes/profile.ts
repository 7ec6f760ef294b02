// A route profile: one file in <config dir>/routes/, saying how mail leaves, for which
// senders/recipients, when its link is up, and how addresses are rewritten on the way out.

export type TlsMode = 'starttls' | 'implicit' | 'none';
export type RouteKind = 'smarthost' | 'mx' | 'pipe' | 'ssh' | 'wrapper' | 'local-only';

export interface RouteCriteria {
  /** Globs on the envelope sender: "*@example.net", "root", or a bare domain "example.net". */
  senders: string[];
  recipients: string[];
  notSenders: string[];
  notRecipients: string[];
}

/** How a route learns that its link is up. All configured detectors must agree. */
export interface OnlineSpec {
  always: boolean;
  file?: string;
  command?: string;
  /** Interface name, e.g. "wan" or "wlan0": up with a global address or a default route. */
  interface?: string;
  /** host:port that must accept a TCP connection. */
  tcp?: string;
  /** How often command/tcp probes run (never below one minute). */
  intervalMs: number;
}

export interface RewriteSpec {
  /** Replaces the envelope sender of local senders. */
  envelopeFrom?: string;
  /** Replaces the address in From:, Sender: and Reply-To: when it is local. */
  headerFrom?: string;
  /** Local part (or full local address) → external address, for envelope and headers. */
  map: Record<string, string>;
}

export type SmtpAuthSpec =
  | { kind: 'password'; user: string; password: string; passwordFile: string }
  | {
      kind: 'oauth2';
      user: string;
      mechanism: 'XOAUTH2' | 'OAUTHBEARER';
      tokenUrl: string;
      clientId: string;
      clientSecretFile?: string;
      refreshTokenFile: string;
      scope?: string;
    };

/** SMTP-after-POP: a POP3 login before sending, for old ISPs. */
export interface PopBeforeSmtpSpec {
  host: string;
  port: number;
  tls: TlsMode;
  user: string;
  passwordFile: string;
  password: string;
}

/** Everything about speaking SMTP to the next hop (smarthost, MX, ssh, wrapper). */
export interface SmtpClientSpec {
  tls: TlsMode | 'opportunistic';
  tlsVerify: boolean;
  caFile?: string;
  auth?: SmtpAuthSpec;
  heloName?: string;
  /** Each TCP connection attempt, and all of them together (Happy Eyeballs); 10 s. */
  connectTimeoutMs: number;
  /** TCP keepalive idle time: a dead link is noticed this long (+10 s of probes) after it went quiet. */
  keepAliveMs: number;
  /** Outstanding data unacknowledged, nothing received, this long: the link is dead (progress-watchdog.ts). */
  progressMs: number;
  /**
   * No byte of a reply a healthy server sends at once (greeting, EHLO, MAIL, RCPT, DATA) for
   * this long: cut and tried once more on a new connection (smtp-deadline.ts StallHedge); 0 = off.
   */
  stallMs: number;
  popBeforeSmtp?: PopBeforeSmtpSpec;
  /**
   * AUTH may go over a session that is not encrypted (tls = "none", or STARTTLS not offered or
   * failed). Off unless the route says so; on for ssh routes, whose tunnel is the encryption.
   */
  allowPlainAuth: boolean;
  deadlines: SmtpDeadlines;
}

/**
 * How long each reply may take to arrive in full, and the whole delivery (Postfix's
 * smtp_*_timeout). The idle timeout alone resets on every byte, so a server that drip-feeds
 * its replies could otherwise hold a delivery for as long as it likes.
 */
export interface SmtpDeadlines {
  /** The 220 greeting, counted from the TCP connection. */
  greetingMs: number;
  /** EHLO/HELO/LHLO, STARTTLS, AUTH, RSET and QUIT replies. */
  heloMs: number;
  mailMs: number;
  rcptMs: number;
  /** The 354 reply to DATA. */
  dataMs: number;
  /** The reply after the final "." (per recipient for LMTP). */
  dataDoneMs: number;
  /** One delivery from the start of connecting (or MAIL on a reused connection) to its last reply. */
  transactionMs: number;
}

/** Postfix's defaults (smtp_helo_timeout, smtp_mail_timeout, …); one hour for everything. */
export const DEFAULT_DEADLINES: SmtpDeadlines = {
  greetingMs: 300_000,
  heloMs: 300_000,
  mailMs: 300_000,
  rcptMs: 300_000,
  dataMs: 120_000,
  dataDoneMs: 600_000,
  transactionMs: 3_600_000,
};

/** A POP3 mailbox fetched while the route is online ([[fetch]] in the route file). */
export interface FetchSpec {
  /** Unique: "ROUTE/USER". */
  name: string;
  route: string;
  host: string;
  port: number;
  tls: 'implicit' | 'starttls' | 'none';
  user: string;
  password: string;
  passwordFile: string;
  auth: 'auto' | 'user' | 'apop' | 'plain';
  keep: boolean;
  /** Local recipients of every fetched message (the fallback when recipientsFrom finds none). */
  deliverTo: string[];
  /** Header names tried in order for a multidrop mailbox (see src/fetch/recipients.ts). */
  recipientsFrom: string[];
  /** Only addresses in these domains are taken from recipientsFrom headers (lower case). */
  recipientsDomains: string[];
  maxSize?: number;
  /** A message over maxSize: left on the server, or its header section delivered with a note. */
  oversize: 'skip' | 'headers';
  caFile?: string;
  /** Fetch again this often while the route is online. */
  intervalMs: number;
}

interface RouteBase extends RouteCriteria {
  name: string;
  file: string;
  /** Lower first; ties are broken by file name. */
  priority: number;
  online: OnlineSpec;
  rewrite: RewriteSpec;
  /** node-cron expression for extra flush (and fetch) times. */
  schedule?: string;
  maxConnections: number;
  messagesPerConnection: number;
  /** POP3 accounts fetched when this route is online. */
  fetch: FetchSpec[];
}

export interface SmarthostRoute extends RouteBase, SmtpClientSpec {
  kind: 'smarthost';
  /** The first of `hosts` (what status lines and single-host users show). */
  host: string;
  port: number;
  /** smarthost = ["a:587", "b:587"]: tried in order, the next one when a connection fails. */
  hosts: { host: string; port: number }[];
  /** DNS servers to resolve the smarthost names with instead of the system's (host or host:port). */
  dnsServers: string[];
}

export interface MxRoute extends RouteBase, SmtpClientSpec {
  kind: 'mx';
  /** Port to connect to on each MX (25; tests use another). */
  port: number;
  /** DNS servers to ask instead of the system's (host or host:port). */
  dnsServers: string[];
  /** [relay] next_hop: this host instead of the MX records (src/relay/routes.ts). */
  nextHop?: { host: string; port: number };
}

export interface PipeRoute extends RouteBase {
  kind: 'pipe';
  /** argv; "{sender}" and "{recipients}" (one argument per recipient) are expanded. */
  command: string[];
  timeoutMs: number;
}

export interface SshRoute extends RouteBase, SmtpClientSpec {
  kind: 'ssh';
  sshHost: string;
  sshPort: number;
  sshUser: string;
  keyFile: string;
  knownHosts: string;
  /** The SMTP server as seen from the SSH host. */
  targetHost: string;
  targetPort: number;
}

export interface WrapperRoute extends RouteBase, SmtpClientSpec {
  kind: 'wrapper';
  /** argv of a command whose stdin/stdout speak SMTP (e.g. ssh host nc localhost 25). */
  command: string[];
}

export interface LocalOnlyRoute extends RouteBase {
  kind: 'local-only';
}

export type RouteProfile = SmarthostRoute | MxRoute | PipeRoute | SshRoute | WrapperRoute | LocalOnlyRoute;

/** Human-readable destination for status lines. */
export function describeTarget(r: RouteProfile): string {
  switch (r.kind) {
    case 'smarthost':
      return r.hosts.map((h) => (h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`)).join(', ');
    case 'mx':
      return r.nextHop ? `${r.nextHop.host}:${r.nextHop.port} ([relay] next_hop)` : `MX (port ${r.port})`;
    case 'pipe':
      return `| ${r.command.join(' ')}`;
    case 'ssh':
      return `ssh ${r.sshUser}@${r.sshHost}:${r.sshPort} → ${r.targetHost}:${r.targetPort}`;
    case 'wrapper':
      return `wrapper ${r.command.join(' ')}`;
    case 'local-only':
      return 'local only (nothing leaves)';
  }
}
