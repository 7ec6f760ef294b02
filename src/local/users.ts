// System user lookup (getent where present, /etc/passwd otherwise).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { log } from '../log/log.js';

export interface SystemUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

function parsePasswdLine(line: string): SystemUser | null {
  const f = line.split(':');
  if (f.length < 7) return null;
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

export function lookupUser(nameOrUid: string | number): SystemUser | null {
  const key = String(nameOrUid);
  try {
    const out = execFileSync('getent', ['passwd', key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return parsePasswdLine(out.trim().split('\n')[0] ?? '');
  } catch (err) {
    // getent exits 2 for "not found"; anything else (missing binary) → read the file.
    if ((err as { status?: number }).status === 2) return null;
  }
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const u = parsePasswdLine(line);
      if (u && (u.name === key || String(u.uid) === key)) return u;
    }
  } catch {
    /* no passwd file */
  }
  return null;
}

/** Login names we pass to getent: portable user names, and never all digits (getent reads those as a uid). */
const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$/;

/**
 * A system user by login name only. Unlike lookupUser, "0" is not root here: local parts
 * come from the network, so a numeric or option-like name ("-s") finds nobody.
 */
export function lookupUserByName(name: string): SystemUser | null {
  if (name.length > 64 || !USER_NAME.test(name) || /^\d+$/.test(name)) return null;
  const u = lookupUser(name);
  return u && u.name === name ? u : null;
}

/**
 * lookupUserByName behind a cache, for lookups at SMTP time (getent blocks for a few ms).
 * Misses are cached too, so a new account is seen after at most `ttlMs`.
 */
export function cachedUserLookup(ttlMs = 30_000, now: () => number = Date.now): (name: string) => SystemUser | null {
  const cache = new Map<string, { user: SystemUser | null; until: number }>();
  return (name) => {
    const hit = cache.get(name);
    if (hit && hit.until > now()) return hit.user;
    const user = lookupUserByName(name);
    if (cache.size >= 10_000) cache.clear(); // a flood of random local parts must not grow it forever
    cache.set(name, { user, until: now() + ttlMs });
    return user;
  };
}

/**
 * Users from a passwd(5)-format file ([local] passwd_file), by login name as lookupUserByName. The file is read again when its size or mtime changes; a file that
 * cannot be read knows nobody (and says so once per change).
 */
export function passwdFileLookup(file: string): (name: string) => SystemUser | null {
  let sig = '';
  let users = new Map<string, SystemUser>();
  return (name) => {
    let now: string;
    try {
      const st = fs.statSync(file);
      now = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch (err) {
      now = `error:${(err as Error).message}`;
    }
    if (now !== sig) {
      sig = now;
      users = new Map();
      try {
        for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
          const u = parsePasswdLine(line);
          if (u && Number.isInteger(u.uid) && Number.isInteger(u.gid) && u.home.startsWith('/') && !users.has(u.name)) users.set(u.name, u);
        }
      } catch (err) {
        log.warn(null, 'passwd_file unreadable: no local users', { file, error: (err as Error).message });
      }
    }
    return users.get(name) ?? null;
  };
}

export function lookupGroupId(name: string): number | null {
  try {
    const out = execFileSync('getent', ['group', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const gid = Number(out.split(':')[2]);
    return Number.isInteger(gid) ? gid : null;
  } catch {
    return null;
  }
}

/** The login name of the calling user (for the sender of `sendmail` mail). */
export function currentUserName(): string {
  const uid = process.getuid?.() ?? -1;
  // getpwuid(3) in-process, the lookup getent makes, without a child process (~5 ms on every
  // `sendmail`, issue 17); it looks up the effective uid, so only when that is the real one.
  if (uid >= 0 && process.geteuid?.() === uid) {
    try {
      return os.userInfo().username;
    } catch {
      /* no passwd entry for the uid: as below */
    }
  }
  return lookupUser(uid)?.name ?? process.env.USER ?? process.env.LOGNAME ?? `uid${uid}`;
}
