// Maildir delivery (qmail's maildir(5), Maildir++ compatible), the way qmail-local does it:
// write tmp/NAME, fsync it, link it into new/NAME,S=<size>, remove tmp/NAME, fsync new/.
// Only then is the message ours no longer, so only then do we answer "ok".
//
// File names ("unique names" in maildir(5), Maildir++ size tag):
//   <seconds>.M<microseconds>P<pid>Q<n>.<host>,S=<bytes on disk>
// where n counts deliveries by this process and host has "/" ":" "," written as \057 \072 \054.
// Stored files have LF line ends (mutt, Dovecot and maildir readers expect Unix text) and start
// with Return-Path and Delivered-To.

import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { fileErrorResult, fileOwner, localMessage, MessageReadError, writeAll, type LocalDeliveryInfo } from './local-headers.js';
import type { DeliveryResult } from './transport.js';

export type { LocalDeliveryInfo } from './local-headers.js';

// Module state on purpose: maildir(5)'s delivery counter belongs to the process, not a call.
let deliveries = 0;

/**
 * Delivers one message into the Maildir `dir`, creating dir, cur/, new/ and tmp/ (0700, owned
 * by `info.user` when we are root) if missing.
 * @returns ok once the file is in new/ and on disk; permfail 5.2.2 when the quota or file size
 * limit is hit; tempfail for every other error (nothing is left in tmp/ or new/).
 */
export async function deliverMaildir(dir: string, body: () => Readable, info: LocalDeliveryInfo): Promise<DeliveryResult> {
  const owner = fileOwner(info);
  try {
    const linked = await userSymlinkIn(dir);
    if (linked) return symlinkRefused(dir, linked);
    await makeMaildir(dir, owner);
    // Again after creating: cur/ new/ tmp/ may have been links all along.
    const inside = await userSymlinkIn(dir, ['cur', 'new', 'tmp']);
    if (inside) return symlinkRefused(dir, inside);
  } catch (err) {
    return fileErrorResult(`cannot create Maildir ${dir}`, err);
  }

  const tmp = path.join(dir, 'tmp', uniqueName());
  let fh: FileHandle;
  try {
    fh = await fs.open(tmp, 'wx', 0o600);
  } catch (err) {
    return fileErrorResult(`cannot create ${tmp}`, err);
  }
  let size = 0;
  try {
    for await (const chunk of localMessage(body(), info)) {
      await writeAll(fh, chunk as Buffer);
      size += (chunk as Buffer).length;
    }
    if (owner) await fh.chown(owner.uid, owner.gid);
    await fh.sync();
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    return err instanceof MessageReadError ? { outcome: 'tempfail', message: `4.3.0 ${err.message}` } : fileErrorResult(`cannot write ${tmp}`, err);
  }

  let delivered: string;
  try {
    delivered = await moveToNew(tmp, path.join(dir, 'new'), size);
  } catch (err) {
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    return fileErrorResult(`cannot move ${tmp} into new/`, err);
  }
  try {
    await syncDir(path.join(dir, 'new'));
  } catch (err) {
    // Not known to be on disk: take it back rather than risk "ok" for a message a crash loses.
    await fs.rm(delivered, { force: true }).catch(() => undefined);
    return fileErrorResult(`cannot sync ${path.join(dir, 'new')}`, err);
  }
  return { outcome: 'ok', message: `2.0.0 delivered to ${delivered}` };
}

/**
 * The first component of `dir` (or of dir/sub for each `subs`) that is a symbolic link not owned
 * by root, or null. A user owns their home, so a link there could point our writes at the state
 * dir (the maildrop: re-injection with a forged envelope) or anywhere the daemon may write.
 * Root's links are the administrator's (Postfix local(8) follows only those for mailboxes).
 * What remains is the race of swapping a component between this look and the write; the
 * maildrop only takes its own file names, so that race cannot re-inject mail.
 */
async function userSymlinkIn(dir: string, subs: string[] = []): Promise<string | null> {
  const paths: string[] = [];
  if (subs.length) for (const s of subs) paths.push(path.join(dir, s));
  else {
    const abs = path.resolve(dir);
    for (let p = abs; p !== path.dirname(p); p = path.dirname(p)) paths.unshift(p);
  }
  for (const p of paths) {
    let st;
    try {
      st = await fs.lstat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null; // made below by us
      throw err;
    }
    if (st.isSymbolicLink() && st.uid !== 0) return p;
  }
  return null;
}

function symlinkRefused(dir: string, link: string): DeliveryResult {
  return {
    outcome: 'tempfail',
    message: `4.2.0 cannot deliver into Maildir ${dir}: ${link} is a symbolic link not owned by root, and tidemail does not follow those (they could point its writes anywhere); fix: replace the link by a real directory, or have root create it`,
  };
}

async function makeMaildir(dir: string, owner: { uid: number; gid: number } | undefined): Promise<void> {
  const first = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  if (first && owner) {
    for (let p = dir; ; p = path.dirname(p)) {
      await fs.chown(p, owner.uid, owner.gid);
      if (p === first || p === path.dirname(p)) break;
    }
  }
  for (const sub of ['cur', 'new', 'tmp']) {
    const p = path.join(dir, sub);
    try {
      await fs.mkdir(p, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    if (owner) await fs.chown(p, owner.uid, owner.gid);
  }
}

/**
 * link() never replaces an existing file, so a name clash (another host sharing the Maildir
 * with a clock gone wrong) costs a new name instead of a message. rename() is the fallback
 * for file systems without hard links, as in Dovecot's maildir saving.
 */
async function moveToNew(tmp: string, newDir: string, size: number): Promise<string> {
  let name = `${path.basename(tmp)},S=${size}`;
  for (let attempt = 0; ; attempt++) {
    const dest = path.join(newDir, name);
    try {
      await fs.link(tmp, dest);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && attempt < 5) {
        name = `${uniqueName()},S=${size}`;
        continue;
      }
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EMLINK') throw err;
      await fs.rename(tmp, dest);
      return dest;
    }
    // A leftover in tmp/ is harmless (readers clean tmp/ after 36 hours); the message is in new/.
    await fs.rm(tmp, { force: true }).catch(() => undefined);
    return dest;
  }
}

async function syncDir(dir: string): Promise<void> {
  const d = await fs.open(dir, 'r');
  try {
    await d.sync();
  } catch (err) {
    // Some file systems cannot fsync a directory and say EINVAL; their entries are synchronous.
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
  } finally {
    await d.close();
  }
}

function uniqueName(): string {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  deliveries++;
  return `${Math.floor(us / 1e6)}.M${us % 1e6}P${process.pid}Q${deliveries}.${maildirHost()}`;
}

function maildirHost(): string {
  return os.hostname().replaceAll('/', '\\057').replaceAll(':', '\\072').replaceAll(',', '\\054');
}
