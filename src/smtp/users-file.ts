// The SMTP AUTH users file. Format, one user a line:
//
//   alice:scrypt$16384$8$1$<salt base64>$<hash base64>
//
// Blank lines and lines starting with # are ignored. The file holds only hashes, and is still
// required to be mode 0600 (no group/other bits): hashes can be attacked offline.
// Written only by `tidemail user`, atomically (temp file + fsync + rename).

import fs from 'node:fs';
import { writeSecretFile } from '../config/secret-file.js';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { isPasswordHash } from '../local/passwords.js';

export type Users = Map<string, string>;

const NAME = /^[A-Za-z0-9._@+-]{1,64}$/;

export function isValidUserName(name: string): boolean {
  return NAME.test(name);
}

/** Parses the text of a users file; errors name file:line. */
export function parseUsers(text: string, file: string): Users {
  const users: Users = new Map();
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (!line.trim() || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const name = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    const where = `${file}:${i + 1}`;
    if (colon < 1 || !isValidUserName(name)) throw new ConfigError(`${where}: not a "user:scrypt$…" line\n  fix: manage this file with \`tidemail user add|passwd|remove NAME\``);
    if (!isPasswordHash(hash)) throw new ConfigError(`${where}: the password of "${name}" is not an scrypt hash (plaintext is not accepted)\n  fix: set it with \`tidemail user passwd ${name}\``);
    users.set(name, hash);
  });
  return users;
}

/**
 * Reads the users file; a missing file is no users. Throws ConfigError when it is readable by
 * group or others; `where` is the config's file:line that names the users file.
 */
export function readUsers(file: string, where: string): Users {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw err;
  }
  if (st.mode & 0o077) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    throw new ConfigError(`${where}: users file ${file} has mode ${mode}; it must be 0600\n  fix: chmod 600 ${file}`);
  }
  return parseUsers(fs.readFileSync(file, 'utf8'), file);
}

/** Replaces the users file atomically with mode 0600, owned by `owner` when given. */
export function writeUsers(file: string, users: Users, owner?: { uid: number; gid: number }): void {
  writeSecretFile(file, [...users].sort(([a], [b]) => a.localeCompare(b)).map(([u, h]) => `${u}:${h}\n`).join(''), owner);
}

/**
 * The daemon's view of the users file: read at start (as root, before privileges are dropped)
 * and re-read when its mtime changes, so `tidemail user add` needs no restart.
 */
export class UsersStore {
  private users: Users;
  private stamp: string;

  constructor(private readonly file: string | null, private readonly where: string) {
    this.users = file ? readUsers(file, where) : new Map();
    this.stamp = this.currentStamp();
  }

  private currentStamp(): string {
    if (!this.file) return '';
    try {
      // Asked at every EHLO: a missing file (no users yet, the usual case) must not cost a thrown
      // ENOENT error with its stack trace each time (~20 us per EHLO, a third of its reply time).
      const st = fs.statSync(this.file, { throwIfNoEntry: false });
      return st ? `${st.ino}:${st.mtimeMs}:${st.size}:${st.mode}` : 'missing';
    } catch {
      return 'missing';
    }
  }

  /** The user's hash, or undefined. Throws ConfigError when the changed file is unsafe or malformed. */
  hashOf(user: string): string | undefined {
    this.refresh();
    return this.users.get(user);
  }

  /** Whether anyone could log in: without users, AUTH is not offered at all. */
  hasUsers(): boolean {
    try {
      this.refresh();
    } catch {
      return true; // a broken file: offer AUTH so the failure is logged where it happens
    }
    return this.users.size > 0;
  }

  private refresh(): void {
    const stamp = this.currentStamp();
    if (stamp !== this.stamp && this.file) {
      this.users = readUsers(this.file, this.where);
      this.stamp = stamp;
    }
  }
}
