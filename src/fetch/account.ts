// A POP3 account to fetch from: one plain record, built by config/ from a route's [[fetch]]
// section and handed to fetch/pop3.ts. Nothing here talks to the network.

import fs from 'node:fs';
import { currentSecret, firstLine, type SecretRead } from '../config/secret-file.js';
import { ConfigError } from '../errors.js';
import type { FetchSpec } from '../routes/profile.js';

/** An account as its route file defines it ([[fetch]]); see FetchSpec. */
export type FetchAccount = FetchSpec;

/**
 * The account's password: the first line of `passwordFile`, reread whenever the file changed
 * (a corrected or broken password counts at the next fetch, no SIGHUP), else `password`.
 * @throws ConfigError when neither is usable or the file is readable by group or others.
 */
export async function readAccountPassword(acct: FetchAccount): Promise<{ password: string; read?: SecretRead }> {
  if (!acct.passwordFile) {
    if (acct.password) return { password: acct.password };
    throw new ConfigError(`fetch account "${acct.name}": no password and no password file`);
  }
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(acct.passwordFile);
  } catch {
    /* gone: currentSecret keeps the last value and says the reread failed */
  }
  if (st && st.mode & 0o077) throw new ConfigError(`fetch account "${acct.name}": password file ${acct.passwordFile} is readable by others (chmod 600 it)`);
  const { value, read } = currentSecret(acct.passwordFile, acct.password ?? '', firstLine);
  if (!value) throw new ConfigError(`fetch account "${acct.name}": password file ${acct.passwordFile} is empty${read.error ? ` or cannot be read (${read.error})` : ''}`);
  return { password: value, read };
}
