// A POP3 account to fetch from: one plain record, built by config/ from a route's [[fetch]]
// section and handed to fetch/pop3.ts. Nothing here talks to the network.

import fs from 'node:fs/promises';
import { ConfigError } from '../errors.js';
import type { FetchSpec } from '../routes/profile.js';

/** An account as its route file defines it ([[fetch]]); see FetchSpec. */
export type FetchAccount = FetchSpec;

/**
 * The account's password: `password` when set, else the first line of `passwordFile`.
 * @throws ConfigError when neither is usable or the file is readable by group or others.
 */
export async function readAccountPassword(acct: FetchAccount): Promise<string> {
  if (acct.password) return acct.password;
  if (!acct.passwordFile) throw new ConfigError(`fetch account "${acct.name}": no password and no password file`);
  let text: string;
  try {
    const st = await fs.stat(acct.passwordFile);
    if (st.mode & 0o077) throw new ConfigError(`fetch account "${acct.name}": password file ${acct.passwordFile} is readable by others (chmod 600 it)`);
    text = await fs.readFile(acct.passwordFile, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`fetch account "${acct.name}": cannot read password file ${acct.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  const line = text.split(/\r?\n/, 1)[0] ?? '';
  if (!line) throw new ConfigError(`fetch account "${acct.name}": password file ${acct.passwordFile} is empty`);
  return line;
}
