// A private, throw-away Postfix instance for the comparison, and the smtp-source driver.
//
// The instance lives entirely under a temp dir: its own config_directory (main.cf, master.cf),
// queue_directory and data_directory, started with `postfix -c DIR start`. The machine's own
// Postfix (/etc/postfix, /var/spool/postfix) is never read for settings nor touched.
//   - smtpd listens only on 127.0.0.1:PORT (a free port), no chroot;
//   - every accepted message is put on the HOLD queue (check_client_access static:HOLD), i.e. it is
//     written and fsync'd into Postfix's durable queue by cleanup exactly as normal mail is, but the
//     queue manager never schedules it: nothing is delivered and nothing competes for the CPU;
//   - logging goes to DIR/postfix.log through postlogd (there may be no syslog here).
// Stopping = `postfix -c DIR stop` (then `abort` if needed), then the whole dir is removed.
//
// With `virtualMaildir` (PostfixOptions) the instance delivers instead of holding: recipients in
// that one domain go through virtual(8) into a single Maildir (static map, trailing slash) under
// virtual_mailbox_base, written as the given uid/gid. Used by links.ts for local delivery rates.
//
// With `relay` the instance relays every message to one smarthost with short retry times (the
// link-flap comparison, link-flap.ts).

import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { runCommand, sleep, which, type CommandResult } from './common.js';

export interface PostfixTools {
  postfix: string;
  /** smtp-source, the load client shipped with Postfix (may exist without a usable postfix) */
  smtpSource: string | null;
  version: string;
}

/** Locate postfix / smtp-source. `postfix` is null when Postfix itself is not installed. */
export async function findPostfix(): Promise<{ postfix: PostfixTools | null; smtpSource: string | null }> {
  const smtpSource = which('smtp-source');
  const postfix = fs.existsSync('/usr/sbin/postfix') ? '/usr/sbin/postfix' : which('postfix');
  if (!postfix) return { postfix: null, smtpSource };
  const postconf = which('postconf');
  let version = 'unknown';
  if (postconf) {
    const r = await runCommand(postconf, ['-h', 'mail_version'], { timeoutMs: 5000 });
    if (r.code === 0) version = r.stdout.trim();
  }
  return { postfix: { postfix, smtpSource, version }, smtpSource };
}

export interface PostfixInstance {
  port: number;
  dir: string;
  /** messages currently in the instance's queue directories (hold + incoming + active + deferred) */
  queuedCount(): number;
  /** pid of the master process, if known */
  masterPid(): number | null;
  stop(): Promise<void>;
}

/** master.cf for the private instance: the usual services, no chroot, smtpd on 127.0.0.1:port. */
function masterCf(port: number): string {
  // service type private unpriv chroot wakeup maxproc command
  return [
    `127.0.0.1:${port} inet n - n - - smtpd`,
    'pickup     unix  n - n 60 1 pickup',
    'cleanup    unix  n - n -  0 cleanup',
    'qmgr       unix  n - n 300 1 qmgr',
    'rewrite    unix  - - n -  - trivial-rewrite',
    'bounce     unix  - - n -  0 bounce',
    'defer      unix  - - n -  0 bounce',
    'trace      unix  - - n -  0 bounce',
    'verify     unix  - - n -  1 verify',
    'flush      unix  n - n 1000? 0 flush',
    'proxymap   unix  - - n -  - proxymap',
    'proxywrite unix  - - n -  1 proxymap',
    'smtp       unix  - - n -  - smtp',
    'relay      unix  - - n -  - smtp',
    'showq      unix  n - n -  - showq',
    'error      unix  - - n -  - error',
    'retry      unix  - - n -  - error',
    'discard    unix  - - n -  - discard',
    'local      unix  - n n -  - local',
    'virtual    unix  - n n -  - virtual',
    'anvil      unix  - - n -  1 anvil',
    'scache     unix  - - n -  1 scache',
    'postlog    unix-dgram n - n - 1 postlogd',
    '',
  ].join('\n');
}

export interface PostfixOptions {
  /**
   * Deliver mail for `domain` with virtual(8) into the Maildir `base/mailbox/` (mailbox must end
   * in "/") as uid:gid (not 0: virtual refuses root), instead of putting every message on HOLD.
   */
  virtualMaildir?: { domain: string; base: string; mailbox: string; uid: number; gid: number };
  /**
   * Relay everything to one smarthost `[host]:port` (no MX lookup, no TLS) with the given
   * retry settings (Postfix time units, e.g. "10s"), instead of holding it. Used by link-flap.ts.
   */
  relay?: { host: string; port: number; minimalBackoff: string; maximalBackoff: string; queueRunDelay: string };
}

function mainCf(dir: string, opts: PostfixOptions = {}): string {
  const v = opts.virtualMaildir;
  const r = opts.relay;
  const delivery = r
    ? [
        // accepted, queued, then sent to the smarthost; a failed attempt waits for the backoff
        'smtpd_recipient_restrictions =',
        `relayhost = [${r.host}]:${r.port}`,
        'smtp_tls_security_level = none',
        `minimal_backoff_time = ${r.minimalBackoff}`,
        `maximal_backoff_time = ${r.maximalBackoff}`,
        `queue_run_delay = ${r.queueRunDelay}`,
      ]
    : v
    ? [
        // accepted, queued, then delivered by virtual(8) into one Maildir
        'smtpd_recipient_restrictions =',
        `virtual_mailbox_domains = ${v.domain}`,
        `virtual_mailbox_base = ${v.base}`,
        `virtual_mailbox_maps = static:${v.mailbox}`,
        `virtual_uid_maps = static:${v.uid}`,
        `virtual_gid_maps = static:${v.gid}`,
        `virtual_minimum_uid = ${Math.min(100, v.uid)}`,
        // must not be below message_size_limit (below), or virtual(8) refuses to start
        'virtual_mailbox_limit = 0',
      ]
    : [
        // accepted into the durable queue, never delivered
        'smtpd_recipient_restrictions = check_client_access static:HOLD',
      ];
  return [
    '# private benchmark instance; see test/bench/postfix.ts',
    'compatibility_level = 3.6',
    `queue_directory = ${dir}/queue`,
    `data_directory = ${dir}/data`,
    // postfix-files, dynamicmaps.cf etc. stay where the package installed them
    'meta_directory = /etc/postfix',
    'mail_owner = postfix',
    'setgid_group = postdrop',
    'inet_interfaces = 127.0.0.1',
    'inet_protocols = ipv4',
    'myhostname = postfix.bench.test',
    'mydestination =',
    'mynetworks = 127.0.0.0/8',
    'alias_maps =',
    'alias_database =',
    'smtpd_relay_restrictions = permit_mynetworks, reject',
    ...delivery,
    'message_size_limit = 104857600',
    `maillog_file = ${dir}/postfix.log`,
    `maillog_file_prefixes = ${dir}`,
    'syslog_name = postfix-bench',
    'biff = no',
    '',
  ].join('\n');
}

/** Count regular files below a directory (Postfix queue files live in hashed subdirs). */
function countFiles(dir: string): number {
  let n = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.isDirectory()) n += countFiles(path.join(dir, e.name));
    else if (e.isFile()) n++;
  }
  return n;
}

/**
 * Create and start a private instance under `dir` (which must exist, be owned by root and be
 * traversable by the postfix user, i.e. mode 0755). Needs root.
 */
export async function startPostfix(
  tools: PostfixTools,
  dir: string,
  port: number,
  opts: PostfixOptions = {},
): Promise<PostfixInstance> {
  const conf = path.join(dir, 'conf');
  fs.mkdirSync(conf, { recursive: true });
  fs.mkdirSync(path.join(dir, 'queue'), { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(conf, 'main.cf'), mainCf(dir, opts));
  fs.writeFileSync(path.join(conf, 'master.cf'), masterCf(port));
  const log = path.join(dir, 'postfix.log');
  const logTail = (): string => {
    try {
      return fs.readFileSync(log, 'utf8').split('\n').slice(-15).join('\n');
    } catch {
      return '(no log)';
    }
  };
  // `postfix` reports fatal errors only to syslog / the maillog file; say where to look.
  const fail = (what: string, r: CommandResult): Error =>
    new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}\n${logTail()}`);

  const check = await runCommand(tools.postfix, ['-c', conf, 'check'], { timeoutMs: 30_000 });
  if (check.code !== 0) throw fail('postfix check', check);
  const start = await runCommand(tools.postfix, ['-c', conf, 'start'], { timeoutMs: 30_000 });
  if (start.code !== 0) throw fail('postfix start', start);

  const pidFile = path.join(dir, 'queue', 'pid', 'master.pid');
  const masterPid = (): number | null => {
    try {
      const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
      return pid > 0 ? pid : null;
    } catch {
      return null;
    }
  };
  const alive = (pid: number | null): boolean => {
    if (!pid) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  let stopped = false;
  return {
    port,
    dir,
    masterPid,
    queuedCount: () =>
      ['hold', 'incoming', 'active', 'deferred'].reduce((n, q) => n + countFiles(path.join(dir, 'queue', q)), 0),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      const pid = masterPid();
      await runCommand(tools.postfix, ['-c', conf, 'stop'], { timeoutMs: 30_000 });
      for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
      if (alive(pid)) await runCommand(tools.postfix, ['-c', conf, 'abort'], { timeoutMs: 30_000 });
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    },
  };
}

/** Synchronous last-resort stop, for exit handlers (Ctrl-C, a crash in the bench). */
export function abortPostfixSync(tools: PostfixTools, dir: string): void {
  spawnSync(tools.postfix, ['-c', path.join(dir, 'conf'), 'abort'], { stdio: 'ignore', timeout: 10_000 });
}

export interface SourceResult {
  ok: boolean;
  /** messages whose DATA completed (from smtp-source -c's running counter) */
  accepted: number;
  elapsedMs: number;
  rate: number;
  error: string;
}

/**
 * Drive a server with smtp-source: `-s C -m N -l SIZE -d` (one session per connection, many
 * messages each, like the Node load generator). smtp-source does not pipeline.
 * `-c` prints a running counter of completed DATA commands, used to count accepted messages.
 */
export async function runSmtpSource(
  smtpSource: string,
  port: number,
  messages: number,
  size: number,
  concurrency: number,
  timeoutMs = 180_000,
  /** false: one connection per message (no -d), the way cron and LAN devices submit */
  reuse = true,
): Promise<SourceResult> {
  const args = [
    '-c',
    ...(reuse ? ['-d'] : []),
    '-s', String(concurrency),
    '-m', String(messages),
    '-l', String(size),
    '-M', 'bench.client',
    '-f', 'from@example.com',
    '-t', 'to@example.org',
    `127.0.0.1:${port}`,
  ];
  const r = await runCommand(smtpSource, args, { timeoutMs });
  const counts = r.stdout.split(/[\r\n]+/).map((s) => Number(s.trim())).filter((n) => Number.isFinite(n) && n > 0);
  const accepted = counts.length ? Math.max(...counts) : 0;
  const ok = r.code === 0 && !r.timedOut && accepted === messages;
  const error = r.timedOut
    ? `timed out after ${timeoutMs} ms`
    : r.code !== 0
      ? r.stderr.trim().split('\n').slice(-2).join(' / ') || `exit ${r.code}`
      : accepted !== messages
        ? `only ${accepted} of ${messages} completed`
        : '';
  return { ok, accepted, elapsedMs: r.elapsedMs, rate: (accepted * 1000) / r.elapsedMs, error };
}
