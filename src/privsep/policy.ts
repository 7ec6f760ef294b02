// The privileged helper's rules: whom it delivers for and where. It believes nothing the
// daemon says about a user — the user is looked up again here, fresh — and refuses root,
// system accounts (uid below min_uid), names not in passwd, paths outside the user's home
// (the configured /var/mail/%u-style paths excepted), and pipes or files the user's own ~/.forward
// does not list (Postfix's allow_mail_to_commands/files = forward for what comes here:
// the aliases file's pipes and files never come here, they run as the daemon's user).

import fs from 'node:fs';
import path from 'node:path';
import { classifyTarget } from '../local/aliases.js';
import { lookupUserByName, type SystemUser } from '../local/users.js';
import { readForwardAsRoot } from './forward.js';
import type { DeliveryRequest, HelperResult, HelperSettings } from './protocol.js';

export interface Approved {
  user: SystemUser;
  /** A supplementary group for the delivery (the spool directory's, e.g. mail). */
  extraGid?: number;
  /** The delivery's exact groups instead of the user's own (initgroups): 'spool' only. */
  groups?: number[];
}

const refuse = (why: string): HelperResult => ({ outcome: 'tempfail', message: `4.7.0 delivery helper refused: ${why}` });

/** The user the daemon names, fresh from passwd, if the helper may act for them at all. */
export function eligibleUser(s: HelperSettings, name: string, uid: number): SystemUser | HelperResult {
  const user = lookupUserByName(name);
  if (!user) return refuse(`no user "${name}" in passwd (removed while mail waited?)`);
  if (user.uid !== uid) return refuse(`user ${user.name} has uid ${user.uid}, not ${uid}`);
  if (user.uid === 0) return refuse(`${user.name} is root; root's mail is delivered with the daemon's rights (alias root to a person)`);
  if (user.uid < s.minUid) return refuse(`${user.name} has uid ${user.uid}, below [local] min_uid ${s.minUid} (a system account)`);
  return user;
}

export async function approve(s: HelperSettings, req: DeliveryRequest): Promise<Approved | HelperResult> {
  if (req.kind === 'spool') return approveSpool(s, req);
  const user = eligibleUser(s, req.user, req.uid);
  if ('outcome' in user) return user;
  switch (req.kind) {
    case 'mda':
      return s.mda.length ? { user } : refuse('no [local] mda configured');
    case 'pipe':
      if (!s.forwardCommands) return refuse('[local] allow_mail_to_commands does not include "forward"');
      if (!req.command || !(await forwardLists(user, 'pipe', req.command))) return refuse(`the command is not in ~${user.name}/.forward`);
      return { user };
    case 'file':
    case 'maildir':
    case 'mbox': {
      const p = req.path ?? '';
      if (!path.isAbsolute(p) || path.normalize(p) !== p) return refuse(`${JSON.stringify(p)} is not a plain absolute path`);
      // A configured path for this user outside homes (the spool file /var/mail/USER).
      if (req.kind !== 'file' && s.templates.some((t) => t.replaceAll('%u', user.name) === p)) return { user, ...(req.kind === 'mbox' ? spoolGroup(path.dirname(p)) : {}) };
      if (!p.startsWith(user.home.replace(/\/+$/, '') + '/')) return refuse(`${p} is outside ${user.name}'s home ${user.home}`);
      // The mailbox is the configured one, nothing else in the home: appended to
      // ~/.ssh/authorized_keys or ~/.profile, a message would be a login or a command.
      if (req.kind !== 'file') {
        const mailbox = path.normalize(expandMailbox(req.kind === 'maildir' ? s.maildir : s.mbox, user));
        if (p !== mailbox) return refuse(`${p} is not ${user.name}'s ${req.kind === 'maildir' ? 'Maildir' : 'mbox'} (${mailbox}, from [local] ${req.kind})`);
      }
      const home = homeProblem(user);
      if (home) return home;
      if (req.kind === 'file' && !s.forwardFiles) return refuse('[local] allow_mail_to_files does not include "forward"');
      if (req.kind === 'file' && !(await forwardLists(user, 'file', p))) return refuse(`the file ${p} is not in ~${user.name}/.forward`);
      return { user };
    }
    default:
      return refuse(`unknown delivery kind ${JSON.stringify(req.kind)}`);
  }
}

/** What a mailbox name may be in a spool path: one plain component, nothing to climb with. */
const SPOOL_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/;

/**
 * Root's, a system account's or a passwd_file-only user's spool file (/var/mail/root): written
 * as the daemon's run user (fixed at fork) with only the spool dir's group, never as the name's
 * owner and never anywhere but the [local] mbox template's expansion. A login user's name is
 * refused: their spool is theirs (kind mbox, as them), and the daemon must not reach it.
 */
function approveSpool(s: HelperSettings, req: DeliveryRequest): Approved | HelperResult {
  const as = s.spoolAs;
  if (!as) return refuse('no run user for spool deliveries');
  const name = req.user;
  if (name.length > 64 || name.includes('/') || name.includes('..') || name.includes('\0') || !SPOOL_NAME.test(name)) return refuse(`${JSON.stringify(name)} is not a mailbox name`);
  const p = req.path ?? '';
  const template = path.normalize(s.mbox);
  if (!path.isAbsolute(template) || !template.includes('%u') || p !== template.replaceAll('%u', name)) return refuse(`${JSON.stringify(p)} is not the [local] mbox spool path for ${name}`);
  const known = lookupUserByName(name);
  if (known && known.uid !== req.uid) return refuse(`user ${name} has uid ${known.uid}, not ${req.uid}`);
  if (known && known.uid !== 0 && known.uid >= s.minUid) return refuse(`${name} (uid ${known.uid}) is a login user; their spool is written as them, not as the daemon`);
  const group = spoolGroup(path.dirname(p)).extraGid;
  return { user: { name: as.name, uid: as.uid, gid: as.gid, home: '/' }, groups: group === undefined || group === as.gid ? [as.gid] : [as.gid, group] };
}

/** [local] maildir/mbox for the user, as deliver/local.ts expandPath makes it. */
function expandMailbox(template: string, user: SystemUser): string {
  const t = template.replaceAll('%u', user.name);
  return t === '~' || t.startsWith('~/') ? path.join(user.home, t.slice(1)) : t;
}

/**
 * A home that is not the user's (a stale chown after a uid change, or someone else's dir given
 * as home): writing there as the user would put mail where its owner decides. Temporary, as
 * Postfix treats a mailbox it may not use: the admin can fix it and the mail waits.
 */
function homeProblem(user: SystemUser): HelperResult | null {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(user.home);
    // A home that is root's link (/home/ann -> /data/ann) is the admin's doing: follow that one.
    if (st.isSymbolicLink() && st.uid === 0) st = fs.statSync(user.home);
  } catch (err) {
    return { outcome: 'tempfail', message: `4.2.0 home directory ${user.home} of ${user.name} is missing (${(err as NodeJS.ErrnoException).code}); fix: create it, owned by ${user.name} (mkhomedir_helper ${user.name})` };
  }
  if (st.isSymbolicLink()) return { outcome: 'tempfail', message: `4.2.0 home ${user.home} of ${user.name} is a symbolic link owned by uid ${st.uid}, not by root; tidemail follows only root's; fix: make the home a real directory, or have root make the link` };
  if (!st.isDirectory()) return { outcome: 'tempfail', message: `4.2.0 home ${user.home} of ${user.name} is not a directory; fix: make it ${user.name}'s own directory` };
  if (st.uid !== user.uid) {
    return { outcome: 'tempfail', message: `4.2.0 home directory ${user.home} is owned by uid ${st.uid}, not by ${user.name} (uid ${user.uid}); tidemail delivers only into a home its user owns; fix: chown ${user.name} ${user.home}` };
  }
  return null;
}

/** The spool directory's group when members may create files there (/var/mail is root:mail 2775). */
function spoolGroup(dir: string): { extraGid?: number } {
  try {
    const st = fs.statSync(dir);
    return st.gid !== 0 && st.mode & 0o020 ? { extraGid: st.gid } : {};
  } catch {
    return {};
  }
}

async function forwardLists(user: SystemUser, kind: 'pipe' | 'file', what: string): Promise<boolean> {
  const f = await readForwardAsRoot(user).catch(() => null);
  if (f?.kind !== 'targets') return false;
  return f.targets.some((raw) => {
    const t = classifyTarget(raw);
    return kind === 'pipe' ? t.kind === 'pipe' && t.command === what : t.kind === 'file' && t.path === what;
  });
}
