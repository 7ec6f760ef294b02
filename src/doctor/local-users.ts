// Probe: which local users can receive mail here, and why not (issue 16). Started as root, the
// daemon's helper writes each system user's mailbox as that user (src/privsep); root and system
// accounts (uid below [local] min_uid) get the daemon's own rights, so their mail must be
// aliased to a person; without root only the daemon's own user gets mail. Each problem the
// helper would refuse or fail on (a missing home, one owned by someone else, a symbolic link
// for the Maildir, a spool that cannot take the file) is named with its fix.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { expandPath } from '../deliver/local.js';
import { LocalResolver } from '../local/resolve.js';
import { currentUserName, type SystemUser } from '../local/users.js';
import { ok, warn, type Finding } from './finding.js';

const AREA = 'local users';
const SHOWN = 30;
const NOBODY = 65534;

function systemUsers(): SystemUser[] {
  let text: string;
  try {
    text = execFileSync('getent', ['passwd'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 64 << 20 });
  } catch {
    text = fs.readFileSync('/etc/passwd', 'utf8');
  }
  const out: SystemUser[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 7) out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

/** Why `u` cannot get mail in `box` written as themselves, or null. */
function problem(u: SystemUser, box: string, cfg: Config['local']): { message: string; fix: string } | null {
  const inHome = box.startsWith(u.home.replace(/\/+$/, '') + '/');
  if (inHome) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(u.home);
      if (st.isSymbolicLink() && st.uid === 0) st = fs.statSync(u.home); // the admin's link: followed, as the helper does
    } catch {
      return { message: `home ${u.home} does not exist`, fix: `create it, owned by ${u.name}: mkhomedir_helper ${u.name}` };
    }
    if (!st.isDirectory()) return { message: `home ${u.home} is not a directory`, fix: `make it a directory owned by ${u.name}` };
    if (st.uid !== u.uid) return { message: `home ${u.home} is owned by uid ${st.uid}, not by ${u.name}`, fix: `chown ${u.name} ${u.home}` };
    const link = firstUserLink(u.home, box);
    if (link) return { message: `${link} is a symbolic link not owned by root (tidemail does not follow those)`, fix: `replace it by a real directory, or have root create the link` };
    return null;
  }
  const isTemplate = [cfg.maildir, cfg.mbox].some((t) => t.startsWith('/') && t.includes('%u') && path.normalize(t).replaceAll('%u', u.name) === box);
  if (!isTemplate) return { message: `${box} is outside ${u.home}`, fix: 'use a path under ~ or a template with %u in [local] maildir/mbox' };
  const dir = path.dirname(box);
  try {
    const st = fs.statSync(dir);
    const sticky = (st.mode & 0o1777) === 0o1777;
    const groupOk = st.gid !== 0 && (st.mode & 0o020) !== 0;
    if (!sticky && !groupOk && !fs.existsSync(box)) return { message: `${dir} is neither world-writable and sticky nor writable by a group other than root's`, fix: `chgrp mail ${dir} && chmod 2775 ${dir}` };
  } catch {
    return { message: `${dir} does not exist`, fix: `create it: install -d -g mail -m 2775 ${dir}` };
  }
  return null;
}

/** The first component under `home` on the way to `box` that is a non-root symbolic link. */
function firstUserLink(home: string, box: string): string | null {
  const rel = path.relative(home, box).split(path.sep);
  let p = home;
  for (const part of rel) {
    p = path.join(p, part);
    try {
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink() && st.uid !== 0) return p;
    } catch {
      return null;
    }
  }
  return null;
}

export async function probeLocalUsers(config: Config): Promise<Finding[]> {
  const cfg = config.local;
  if (cfg.delivery === 'lmtp') return [ok(AREA, `delivered over LMTP to ${cfg.lmtp}; the LMTP server writes as each user`)];
  const out: Finding[] = [];
  const asRoot = process.getuid?.() === 0;
  const me = currentUserName();
  const boxOf = (u: SystemUser) => (cfg.delivery === 'maildir' ? expandPath(cfg.maildir, u) : cfg.delivery === 'mbox' ? expandPath(cfg.mbox, u) : `${cfg.mda[0] ?? 'the MDA'}`);
  const where = cfg.delivery === 'maildir' ? cfg.maildir : cfg.delivery === 'mbox' ? cfg.mbox : `the MDA ${cfg.mda[0] ?? ''}`;
  if (!asRoot) {
    out.push(warn(AREA, `checked as ${me}, not root: a daemon started like this delivers only to ${me} (${where}); other users' mail waits`, 'start the daemon as root (systemctl start tidemail): it keeps a small root helper that writes each user\'s mailbox as that user'));
  }
  const people = systemUsers().filter((u) => u.uid >= cfg.minUid && u.uid !== NOBODY && u.uid !== 0);
  let shownOk = 0;
  let hiddenOk = 0;
  for (const u of people) {
    if (!asRoot && u.uid !== process.getuid?.()) continue;
    const box = boxOf(u);
    const p = cfg.delivery === 'mda' ? null : problem(u, box, cfg);
    if (p) out.push(warn(AREA, `${u.name} (uid ${u.uid}) cannot receive: ${p.message}`, p.fix));
    else if (shownOk++ < SHOWN) out.push(ok(AREA, `${u.name} (uid ${u.uid}): ${box}, written as ${u.name}`));
    else hiddenOk++;
  }
  if (hiddenOk) out.push(ok(AREA, `… and ${hiddenOk} more users who can receive`));
  if (!people.length) out.push(ok(AREA, `no users with uid ${cfg.minUid} or above`));
  // root and postmaster: normally aliased to a person; if not, the daemon's rights must do.
  const resolver = new LocalResolver({ domains: [config.hostname], hostname: config.hostname, aliasesFile: cfg.aliases, users: cfg.users, virtual: cfg.virtual, forward: false });
  const unaliased: { name: string; boxes: string[] }[] = [];
  for (const name of ['root', 'postmaster']) {
    const r = await resolver.resolve(`${name}@${config.hostname}`).catch(() => null);
    if (!r) continue;
    const boxes = r.targets.flatMap((t) => (t.kind === 'mailbox' && (t.uid === 0 || t.uid < cfg.minUid) ? [t.user] : []));
    if (boxes.length) unaliased.push({ name, boxes });
    else {
      const to = r.targets.map((t) => (t.kind === 'mailbox' ? t.user : t.kind === 'remote' ? t.address : t.kind === 'pipe' ? `|${t.command}` : t.path));
      out.push(ok(AREA, `${name} → ${to.join(', ')}`));
    }
  }
  if (unaliased.length) {
    const names = unaliased.map((u) => u.name);
    const boxes = [...new Set(unaliased.flatMap((u) => u.boxes))];
    out.push(warn(AREA, `${names.join(' and ')} mail goes to ${boxes.join(', ')}'s own mailbox, which tidemail writes with the daemon's rights (${config.user}), never as root or a system account: it can fail there`,
      `alias ${names.join(' and ')} to a person in ${cfg.aliases ?? 'the aliases file ([local] aliases)'} (e.g. ${names[0]}: you), then run newaliases`));
  }
  return out;
}
