// The shape of a loaded configuration. Everything here is plain data: the loader fills
// in defaults, so consumers never deal with missing values.

export interface ListenAddress {
  host: string;
  port: number;
}

export interface SmtpConfig {
  listen: ListenAddress[];
  /** CIDRs allowed to relay to any domain; everyone else may only send to local domains. */
  trustedNetworks: string[];
  maxMessageSize: number;
  maxRecipients: number;
  maxClients: number;
  /** Idle time allowed between commands (RFC 5321 §4.5.3.2 asks for ≥ 5 minutes). */
  commandTimeoutMs: number;
  /** Message submission listeners (RFC 6409): STARTTLS offered, AUTH required before MAIL. */
  submission: ListenAddress[];
  /** Implicit-TLS submission listeners (RFC 8314), AUTH required before MAIL. */
  smtps: ListenAddress[];
  /** PEM certificate chain and key; STARTTLS is offered on every listener when set. */
  tlsCert: string | null;
  tlsKey: string | null;
  /** file:line:column of tls_cert and tls_key, for errors about the files. */
  tlsWhere: { cert: string; key: string };
  /** `user:scrypt$…` lines (mode 0600); null for the embedded default (no config dir). */
  usersFile: string | null;
  /** file:line naming users_file in the config, for errors about the users file. */
  usersFileWhere: string;
  /** user → envelope/From patterns it may use ("*@domain" allowed); default user@each local domain. */
  senders: Record<string, string[]>;
  /** AUTH without TLS on a loopback listener (a local webmail, a test). */
  allowPlainAuthOnLocalhost: boolean;
  /** Longest text line in DATA, without CRLF (RFC 5322 §2.1.1: 998); 0 = no limit. */
  maxLineLength: number;
  /** Longest command line, without CRLF (RFC 5321 §4.5.3.1.4: 512, plus room for ESMTP parameters). */
  maxCommandLength: number;
  /** Messages one connection may send before it is told to reconnect. */
  maxMessagesPerConnection: number;
  /** Refused commands in one session before we say 421 and hang up. */
  maxErrors: number;
  /** Longest a whole session may last, however busy (slowloris drip-feeding). */
  sessionTimeoutMs: number;
  /** Simultaneous connections from one client address. */
  maxConnectionsPerIp: number;
  /**
   * How long untrusted clients on MX listeners wait for the greeting; one that talks first is an
   * early talker (a spam bot that does not wait) and is refused. 0 disables the wait.
   */
  greetDelayMs: number;
}

export interface QueueConfig {
  retryMinMs: number;
  retryMaxMs: number;
  maxLifetimeMs: number;
  delayWarningMs: number;
  /** How long a message with no online route waits before it is looked at again. */
  noRouteRecheckMs: number;
  /**
   * Free bytes state_dir's filesystem keeps for the queue's own writes (DSNs, delivery records):
   * below it, and below it + 1.5 × SIZE=, new mail is refused up front (src/queue/free-space.ts).
   * null ("auto", the default): worked out from max_message_size and the filesystem's size
   * (reserveOf), so a router's small flash is not refused all mail.
   */
  queueMinfree: number | null;
}

export type LocalDelivery = 'maildir' | 'mbox' | 'lmtp' | 'mda';

export interface LocalConfig {
  domains: string[];
  /** sendmail-format aliases file; its compiled form sits next to it (newaliases). */
  aliases: string | null;
  delivery: LocalDelivery;
  /** Maildir path template: "~" is the user's home, %u the user name. */
  maildir: string;
  /** mbox path template, %u the user name. */
  mbox: string;
  /** LMTP server: a unix socket path or host:port. */
  lmtp: string;
  /** MDA argv; {sender}, {recipient} and {user} are expanded. */
  mda: string[];
  /** Local part → system user. */
  users: Record<string, string>;
  /** Virtual domains: domain → { local part or "*" → user or external address }. */
  virtual: Record<string, Record<string, string>>;
  /** Honour ~/.forward files (their pipes and files run only when delivery runs as that user). */
  forward: boolean;
  /**
   * A passwd(5)-format file of users local delivery knows (name, uid, gid, home), looked up
   * before the system's (getent, /etc/passwd): mail-only users, or a test's temp homes.
   */
  passwdFile: string | null;
  /** How long a client may wait at end of DATA for local delivery before we queue the rest. */
  preQueueDeadlineMs: number;
  /** A copy of every message goes here (an address, or a Maildir path starting with /). */
  archive: string | null;
  /** Users below this uid (and root) are never delivered to as themselves (src/privsep). */
  minUid: number;
  /** Where pipes and files may come from (Postfix's allow_mail_to_commands/files). */
  allowMailToCommands: TargetSource[];
  allowMailToFiles: TargetSource[];
}

/** Where a pipe or file target was written: the aliases file, an :include: file, a ~/.forward. */
export type TargetSource = 'alias' | 'include' | 'forward';

/** [checks]: which checks run at which SMTP phase, and each check's own options table. */
export interface ChecksConfig {
  phases: Record<'connect' | 'helo' | 'mail' | 'rcpt' | 'data', string[]>;
  /** The `[checks.NAME]` table for a check (an empty reader when absent). */
  options(name: string): import('./reader.js').ConfigReader;
  /** file:line of a phase list, for errors. */
  where(phase: string): string;
  /** Deadline for one check's answer. */
  timeoutMs: number;
}

export interface Config {
  /** The main config file, or null for the embedded local-only default. */
  file: string | null;
  /** Where `routes/*.toml` live; null for the embedded default. */
  configDir: string | null;
  hostname: string;
  stateDir: string;
  /** Unprivileged user the daemon switches to when started as root. */
  user: string;
  /** file:line:column of `user` in the config, for errors about it. */
  userWhere: string;
  /** Login names whose sendmail may set any envelope sender (root and `user` always may). */
  trustedUsers: string[];
  smtp: SmtpConfig;
  local: LocalConfig;
  queue: QueueConfig;
  checks: ChecksConfig;
  /** [relay]: domains relayed for, not delivered here (src/relay/config.ts). */
  relay: import('../relay/config.js').RelayConfig;
  /** [alerts]: warnings that do not travel through the queue (src/alerts/config.ts). */
  alerts: import('../alerts/config.js').AlertsConfig;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}
