// Dropping root: the daemon binds its ports as root, then runs as the configured user
// (default `tidemail`, falling back to `nobody` when the package has not created it), with no
// supplementary group: root's and system accounts' /var/mail files are written by the root
// helper (privsep, kind 'spool'), so the process that parses the network holds no group `mail`.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from './errors.js';
import { log } from './log/log.js';
import { lookupUser, type SystemUser } from './local/users.js';

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Which user we will run as; null when not root (nothing to drop). `where`: file:line of `user`. */
export function resolveRunUser(wanted: string, where = 'user'): SystemUser | null {
  if (!isRoot()) return null;
  if (wanted === 'root') throw new ConfigError(`${where}: user = "root": refusing to run as root\n  fix: set user = "tidemail" (or another unprivileged user)`);
  const u = lookupUser(wanted);
  if (u) return u;
  const nobody = lookupUser('nobody');
  if (!nobody) throw new ConfigError(`${where}: user "${wanted}" does not exist and there is no "nobody" user to fall back to\n  fix: create it: useradd --system ${wanted}`);
  log.warn(null, `user "${wanted}" does not exist; running as "nobody" (create it: useradd --system ${wanted})`);
  return nobody;
}

/**
 * Gives the state dir to the run user: what root created there earlier (queue, greylist
 * database). A world-writable directory (the maildrop) is chowned itself but never walked:
 * its contents are the users' own, and a user-made tree can be deeper than any path.
 */
export function chownTree(dir: string, u: SystemUser, skipped = { logged: false }): void {
  fs.lchownSync(dir, u.uid, u.gid);
  if ((fs.lstatSync(dir).mode & 0o002) !== 0) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) chownTree(p, u, skipped);
    else if (fs.lstatSync(p).nlink > 1) {
      // A second name for a file (the run user linked /etc/shadow here, where the kernel has
      // fs.protected_hardlinks = 0): chowning it would give that user root's file. Ours never have one.
      if (!skipped.logged) log.warn(null, 'state dir: a file with more than one hard link is left as it is (not chowned)', { file: p, fix: `remove it if it is not yours: rm ${p}` });
      skipped.logged = true;
    } else fs.lchownSync(p, u.uid, u.gid);
  }
}

/** Only the run user's own group: nothing of `mail` (or any group root had) stays. */
export function dropPrivileges(u: SystemUser): void {
  process.setgroups?.([u.gid]);
  process.setgid?.(u.gid);
  process.setuid?.(u.uid);
  log.info(null, 'running unprivileged', { user: u.name, uid: u.uid });
}
