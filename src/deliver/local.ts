// Local delivery: resolve a recipient (virtual domains, aliases, user map, system users,
// ~/.forward) and deliver to every target — the user's mailbox (Maildir, mbox, LMTP or an MDA,
// as [local] delivery says), alias files and pipes — or hand external targets back to the queue.
//
// One result per original recipient: temporary if any target failed temporarily (the whole
// recipient is retried, so a target that already succeeded may see a duplicate, as with
// Postfix's local(8)), else permanent if any target failed permanently, else ok.
//
// Whose rights: when the daemon was started as root, a system user's mailbox and the pipes and
// files of their ~/.forward are delivered by the privileged helper as that user
// (src/privsep); root, system accounts below [local] min_uid and passwd_file-only users get
// the daemon's own rights (Postfix's default_privs), and so do the aliases file's pipes — their
// /var/mail/%u spool file through the helper too (kind 'spool'), since the daemon has no group mail.

import path from 'node:path';
import type { Config, LocalConfig } from '../config/schema.js';
import { LocalResolveError, LocalResolver, type LocalTarget } from '../local/resolve.js';
import { cachedUserLookup, currentUserName, passwdFileLookup, type SystemUser } from '../local/users.js';
import type { DeliveryHelper } from '../privsep/client.js';
import { readForwardFile, type ForwardFile } from '../local/forward.js';
import type { DeliveryKind } from '../privsep/protocol.js';
import { log } from '../log/log.js';
import type { LocalLane } from './runner.js';
import type { Envelope } from '../queue/store.js';
import { nonMailboxReason } from '../message/address.js';
import type { DeliveryJob, DeliveryResult, Transport } from './transport.js';

export interface LocalDeliveryOutcome {
  results: Map<string, DeliveryResult>;
  /** External addresses that aliases/.forward expanded to: queue them as new recipients. */
  forwards: string[];
}

type User = Extract<LocalTarget, { kind: 'mailbox' }>;

/** Imported once, at first use: an idle daemon does not hold the mailbox writers (issue 17). */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () =>
    (p ??= load().catch((err) => {
      p = undefined;
      throw err;
    }));
}
const maildir = once(() => import('./maildir.js'));
const mbox = once(() => import('./mbox.js'));
const mda = once(() => import('./mda.js'));
const lmtpClient = once(() => import('./lmtp.js'));

export function expandPath(template: string, user: { name: string; home: string }): string {
  const t = template.replaceAll('%u', user.name);
  return t === '~' || t.startsWith('~/') ? path.join(user.home, t.slice(1)) : t;
}

export class LocalTransport implements Transport {
  readonly name = 'local';

  constructor(
    private readonly cfg: LocalConfig,
    private readonly resolver: LocalResolver,
    private readonly hostname: string,
    /** Adds recipients to a queued message (alias/forward to an external address). */
    private readonly addRecipients: (msgid: string, addresses: string[]) => Promise<void>,
    /** The root helper that delivers as each user; null when the daemon was not started as root. */
    private readonly helper: DeliveryHelper | null = null,
  ) {}

  private readonly systemUser = cachedUserLookup();

  async deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>> {
    const { results, forwards } = await this.deliverAll(job);
    if (forwards.length) await this.addRecipients(job.msgid, forwards);
    return results;
  }

  private async deliverAll(job: DeliveryJob): Promise<LocalDeliveryOutcome> {
    const results = new Map<string, DeliveryResult>();
    const forwards: string[] = [];
    // Mailboxes over LMTP go in one transaction per message; everything else one by one.
    const lmtp: { env: Envelope; user: User }[] = [];
    const partial = new Map<string, DeliveryResult[]>();
    for (const env of job.recipients) {
      if (isArchive(this.cfg, env.recipient)) {
        results.set(env.envId, await (await maildir()).deliverMaildir(env.recipient, job.body, { sender: job.sender, recipient: env.recipient }));
        continue;
      }
      // Never a path or a command from an envelope address, whatever let it into the queue.
      const notMailbox = nonMailboxReason(env.recipient);
      if (notMailbox) {
        results.set(env.envId, { outcome: 'permfail', message: `553 5.1.3 <${env.recipient}>: not a mailbox address (${notMailbox})` });
        continue;
      }
      let targets: LocalTarget[];
      try {
        const res = await this.resolver.resolve(env.recipient);
        if (!res) {
          results.set(env.envId, { outcome: 'permfail', message: `550 5.1.1 <${env.recipient}>: no such user here` });
          continue;
        }
        targets = res.targets;
      } catch (err: unknown) {
        const permanent = err instanceof LocalResolveError && err.permanent;
        results.set(env.envId, { outcome: permanent ? 'permfail' : 'tempfail', message: `${permanent ? (err as LocalResolveError).status : '4.3.0'} ${(err as Error).message}` });
        continue;
      }
      const got: DeliveryResult[] = [];
      for (const t of targets) {
        if (t.kind === 'remote' && nonMailboxReason(t.address)) {
          got.push({ outcome: 'permfail', message: `5.1.3 <${t.address}>: not a mailbox address (${nonMailboxReason(t.address)})` });
        } else if (t.kind === 'remote') {
          forwards.push(t.address);
          got.push({ outcome: 'ok', message: `forwarded to <${t.address}>` });
        } else if (t.kind === 'mailbox' && this.cfg.delivery === 'lmtp') {
          lmtp.push({ env, user: t });
        } else {
          got.push(await this.deliverTarget(t, job, env));
        }
      }
      partial.set(env.envId, got);
    }
    if (lmtp.length) {
      const byRcpt = await (await lmtpClient()).deliverLmtp(lmtpTarget(this.cfg.lmtp), job.body, job.sender, lmtp.map((l) => l.user.user), this.hostname);
      for (const l of lmtp) {
        partial.get(l.env.envId)!.push(byRcpt.get(l.user.user) ?? { outcome: 'tempfail', message: 'no LMTP reply for this recipient' });
      }
    }
    for (const [envId, got] of partial) results.set(envId, combine(got));
    return { results, forwards };
  }

  private async deliverTarget(t: Exclude<LocalTarget, { kind: 'remote' }>, job: DeliveryJob, env: Envelope): Promise<DeliveryResult> {
    const asUser = t.user !== undefined && t.uid !== undefined ? this.helperUser(t.user, t.uid) : null;
    if (asUser) return this.viaHelper(asUser, t, job, env);
    if (t.kind !== 'mailbox' && t.user !== undefined && t.uid !== process.getuid?.()) return refuseForeignForward(t, env, this.helper ? this.cfg.minUid : null);
    const spool = t.kind === 'mailbox' ? this.spoolPath(t) : null;
    if (spool && t.kind === 'mailbox') return this.helper!.deliver({ user: t.user, uid: t.uid, kind: 'spool', path: spool, sender: job.sender, recipient: env.recipient }, job.body);
    const r = await this.inProcess(t, job, env);
    return t.kind === 'mailbox' && r.outcome === 'tempfail' ? withoutRootHint(r, t, this.helper ? this.cfg.minUid : null) : r;
  }

  /**
   * Root's, a system account's or a passwd_file-only user's [local] mbox spool file
   * (/var/mail/%u), which the helper writes as our user with the spool dir's group (we hold no
   * group mail); null without a helper that knows our user, or when the mailbox is elsewhere.
   */
  private spoolPath(t: User): string | null {
    if (!this.helper?.settings.spoolAs || this.cfg.delivery !== 'mbox') return null;
    const template = path.normalize(this.cfg.mbox);
    return path.isAbsolute(template) && template.includes('%u') ? template.replaceAll('%u', t.user) : null;
  }

  /** The system user to deliver as through the helper, or null (no helper, root, system account, passwd_file only). */
  private helperUser(name: string, uid: number): SystemUser | null {
    if (!this.helper || uid === 0 || uid < this.cfg.minUid) return null;
    const u = this.systemUser(name);
    return u && u.uid === uid ? u : null;
  }

  private viaHelper(u: SystemUser, t: Exclude<LocalTarget, { kind: 'remote' }>, job: DeliveryJob, env: Envelope): Promise<DeliveryResult> {
    const base = { user: u.name, uid: u.uid, sender: job.sender, recipient: env.recipient };
    let kind: DeliveryKind;
    let where: { path?: string; command?: string };
    if (t.kind === 'pipe') [kind, where] = ['pipe', { command: t.command }];
    else if (t.kind === 'file') [kind, where] = ['file', { path: t.path }];
    else if (this.cfg.delivery === 'maildir') [kind, where] = ['maildir', { path: expandPath(this.cfg.maildir, u) }];
    else if (this.cfg.delivery === 'mbox') [kind, where] = ['mbox', { path: expandPath(this.cfg.mbox, u) }];
    else [kind, where] = ['mda', {}];
    // Normalised first: /home/m/../ann/x starts with /home/m/ but is ann's; the helper refuses
    // any such path, and a refusal of the helper is temporary — retried for the message's life.
    if (kind === 'file' && path.normalize(where.path!) !== where.path) {
      return Promise.resolve({
        outcome: 'permfail',
        message: `5.7.1 <${env.recipient}>: ~${u.name}/.forward sends mail to the file ${where.path}, which is not a plain path (it has "..", "." or "//" in it); tidemail writes only plain paths inside their owner's home. Fix: write it as ${path.normalize(where.path!)} if that is inside ${u.home}`,
      });
    }
    if (kind === 'file' && !where.path!.startsWith(u.home.replace(/\/+$/, '') + '/')) {
      return Promise.resolve({
        outcome: 'permfail',
        message: `5.7.1 <${env.recipient}>: ~${u.name}/.forward sends mail to the file ${where.path}, outside ${u.home}; tidemail writes .forward files only inside their owner's home. Fix: use a file under ${u.home}, or ask the administrator to put it in the aliases file`,
      });
    }
    return this.helper!.deliver({ ...base, kind, ...where }, job.body);
  }

  /** With the daemon's own rights (not root: the daemon never is by now). */
  private async inProcess(t: Exclude<LocalTarget, { kind: 'remote' }>, job: DeliveryJob, env: Envelope): Promise<DeliveryResult> {
    const user = t.kind === 'mailbox' ? { name: t.user, uid: t.uid, gid: t.gid, home: t.home } : undefined;
    const info = { sender: job.sender, recipient: env.recipient, user };
    switch (t.kind) {
      case 'file':
        return (await mbox()).deliverMbox(t.path, job.body, info);
      case 'pipe':
        return (await mda()).deliverMda(['/bin/sh', '-c', t.command], job.body, info, undefined, { expand: false });
      case 'mailbox':
        switch (this.cfg.delivery) {
          case 'maildir':
            return (await maildir()).deliverMaildir(expandPath(this.cfg.maildir, user!), job.body, info);
          case 'mbox':
            return (await mbox()).deliverMbox(expandPath(this.cfg.mbox, user!), job.body, info);
          case 'mda':
            return (await mda()).deliverMda(this.cfg.mda.map((a) => a.replaceAll('{user}', t.user)), job.body, info);
          default:
            throw new Error('unreachable: lmtp mailboxes are batched');
        }
    }
  }

  async close(): Promise<void> {}
}

/** Local delivery as the runner and the SMTP front use it. */
export interface LocalDelivery extends LocalLane {
  resolver: LocalResolver;
}

export function createLocalLane(config: Config, addRecipients: (msgid: string, addresses: string[]) => Promise<void>, helper: DeliveryHelper | null = null): LocalDelivery {
  const resolver = new LocalResolver({
    domains: [...new Set([...config.local.domains, config.hostname.toLowerCase()])],
    hostname: config.hostname,
    aliasesFile: config.local.aliases,
    users: config.local.users,
    virtual: config.local.virtual,
    forward: config.local.forward,
    ...(config.local.passwdFile ? { lookupUser: withPasswdFile(config.local.passwdFile) } : {}),
    ...(helper ? { readForward: forwardReader(helper, config.local.minUid) } : {}),
    allowCommands: config.local.allowMailToCommands,
    allowFiles: config.local.allowMailToFiles,
  });
  return {
    resolver,
    // The archive Maildir is exactly the configured path: no envelope address can be a path
    // (message/address.ts nonMailboxReason), so no sender can name it or any other.
    isLocal: (a) => isArchive(config.local, a) || resolver.isLocal(a),
    transport: new LocalTransport(config.local, resolver, config.hostname, addRecipients, helper),
  };
}

/**
 * ~/.forward through the root helper for the users it delivers as (their 0700 homes are closed
 * to the daemon); with our own rights for the rest, as before.
 */
function forwardReader(helper: DeliveryHelper, minUid: number): (u: SystemUser) => Promise<ForwardFile> {
  const system = cachedUserLookup();
  return (u) => {
    const sys = u.uid !== 0 && u.uid >= minUid ? system(u.name) : null;
    return sys && sys.uid === u.uid ? helper.readForward(sys) : readForwardFile(u);
  };
}

/** [local] passwd_file's users first, then the system's. */
function withPasswdFile(file: string) {
  const fromFile = passwdFileLookup(file);
  const system = cachedUserLookup();
  return (name: string) => fromFile(name) ?? system(name);
}

/**
 * A pipe or file from someone's ~/.forward while we are not that user: running it with our
 * rights (root, or the daemon's user, who can read the queue and every mbox) would hand those
 * rights to whoever writes a .forward. Permanent, like Postfix's "mail to command is
 * restricted": retrying cannot help until the .forward or the setup changes, and a deferral
 * would sit unseen in the queue for days. The user's other .forward targets still get the mail.
 */
function refuseForeignForward(t: Extract<LocalTarget, { kind: 'file' | 'pipe' }>, env: Envelope, minUid: number | null): DeliveryResult {
  const uid = process.getuid?.() ?? -1;
  const me = currentUserName();
  const what = t.kind === 'pipe' ? `a command (|${t.command})` : `a file (${t.path})`;
  // With the helper, only root, system accounts and passwd_file-only users end up here.
  const why = minUid === null ? '' : t.uid !== undefined && (t.uid === 0 || t.uid < minUid) ? `${t.user} (uid ${t.uid}) is root or a system account (below [local] min_uid ${minUid}), ` : `${t.user} is not a system user tidemail may deliver as, `;
  log.warn(env.envId, '.forward target refused: delivery does not run as its owner', { to: `<${env.recipient}>`, user: t.user, kind: t.kind, target: t.kind === 'pipe' ? `|${t.command}` : t.path, running_as: `${me} (uid ${uid})` });
  return {
    outcome: 'permfail',
    message:
      `5.7.1 <${env.recipient}>: ~${t.user}/.forward sends mail to ${what}, but ${why}this delivery runs as ${me} (uid ${uid}), not as ${t.user}, ` +
      `and tidemail runs a user's .forward commands and files only with that user's own rights. ` +
      `Fix: remove that line from ~${t.user}/.forward, or ask the administrator to put it in the aliases file`,
  };
}

/**
 * A mailbox delivery that failed with our own rights: say when the cause is that we are not
 * root (a developer's `npx tidemail daemon`), so the fix is in the error, not in a search.
 */
function withoutRootHint(r: DeliveryResult, t: Extract<LocalTarget, { kind: 'mailbox' }>, minUid: number | null): DeliveryResult {
  const uid = process.getuid?.() ?? -1;
  if (t.uid === uid || !/EACCES|EPERM/.test(r.message)) return r;
  const me = currentUserName();
  if (minUid !== null) {
    const who = t.uid === 0 || t.uid < minUid ? `${t.user} is root or a system account (uid ${t.uid}, below [local] min_uid ${minUid}), so its mail is written with the daemon's rights (${me})` : `${t.user} is not in the system's passwd, so its mail is written with the daemon's rights (${me})`;
    return { ...r, message: `${r.message}; ${who}; fix: alias ${t.user} to a person in the aliases file (root: you), or give ${me} write access to that mailbox` };
  }
  return { ...r, message: `${r.message}; tidemail runs as ${me} without root, so it can write only ${me}'s own mailbox; fix: start the daemon as root (it keeps a small root helper that delivers as each user), or alias ${t.user} to ${me}` };
}

/** The [local] archive recipient when it is a Maildir path ("/path"), not an address. */
function isArchive(cfg: LocalConfig, recipient: string): boolean {
  return cfg.archive !== null && cfg.archive.startsWith('/') && recipient === cfg.archive;
}

function combine(got: DeliveryResult[]): DeliveryResult {
  if (!got.length) return { outcome: 'permfail', message: '5.1.1 the address expands to nothing' };
  const temp = got.find((r) => r.outcome === 'tempfail');
  if (temp) return temp;
  const perm = got.find((r) => r.outcome === 'permfail');
  if (perm) return perm;
  return { outcome: 'ok', message: got.map((r) => r.message).join('; ') };
}

function lmtpTarget(spec: string): { socket?: string; host?: string; port?: number } {
  if (spec.startsWith('/')) return { socket: spec };
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(spec);
  return m ? { host: m[1], port: Number(m[2]) } : { host: spec, port: 24 };
}
