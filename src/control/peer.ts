// Who is on the other end of the public control socket. Node cannot read SO_PEERCRED, so the
// client proves its uid with a file: it creates `.who-<128 random bits>` (O_EXCL, 0600) in the
// maildrop — 1733, so anyone may create files there but only the owner (and we, the directory's
// owner) can remove them — and sends the name. The file's owner is the user; we remove it, so
// a proof is used once. The pickup ignores dot files.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { maildropDir } from '../queue/maildrop-spool.js';
import { PermissionError } from './protocol.js';

const PROOF_NAME = /^\.who-[0-9a-f]{32}$/;
/** A proof older than this is stale (a leftover, or someone else's name replayed). */
const PROOF_MAX_AGE_MS = 60_000;

/** The uid that made the proof file `name`; removes it. */
export function provenUid(stateDir: string, name: unknown): number {
  if (typeof name !== 'string' || !PROOF_NAME.test(name)) throw new PermissionError('this request needs a proof of who you are (run it with the tidemail command)');
  const file = path.join(maildropDir(stateDir), name);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    throw new PermissionError('the proof of who you are was not found in the maildrop');
  }
  try {
    fs.unlinkSync(file);
  } catch {
    /* the client removes it too */
  }
  // A hard link to someone else's file would carry their uid: only a fresh, single-link file.
  if (!st.isFile() || st.nlink !== 1 || Date.now() - st.mtimeMs > PROOF_MAX_AGE_MS) throw new PermissionError('the proof of who you are is not valid');
  return st.uid;
}

/** Client side: makes a proof file; returns its name and a function that removes it. */
export function makeProof(stateDir: string): { name: string; done: () => void } {
  const name = `.who-${randomBytes(16).toString('hex')}`;
  const file = path.join(maildropDir(stateDir), name);
  fs.closeSync(fs.openSync(file, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW, 0o600));
  return { name, done: () => fs.rmSync(file, { force: true }) };
}
