// mbox delivery: append to a /var/mail/USER-style file in the mboxrd format (RFC 4155, with
// ">From " quoting that can be undone):
//
//   From sender@example.org Wed Jun 30 21:49:08 1993      ← asctime(3), local time
//   Return-Path: <sender@example.org>
//   Delivered-To: user@example.org
//   …the message, LF line ends, lines matching /^>*From / with one more ">"…
//                                                          ← one empty line ends each message
//
// Locking: only a dotlock, FILE.lock, created with O_EXCL (atomic on local file systems and
// NFSv3+). Node cannot take fcntl(2) or flock(2) locks, so we rely on the dotlock alone; mutt
// (mbox_lock with dotlocking), Dovecot (mbox_write_locks = fcntl dotlock) and procmail take
// it too for /var/mail, so they do not read or write while we append. A lock older than five
// minutes is stale (its owner died) and removed, as mutt and Postfix do; we refresh ours while
// we hold it. The spool directory must be writable for the lock: /var/mail is usually
// group "mail" and mode 1777 or 2775.
//
// A failed append is cut back to the old size, so the file never holds half a message.

import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { log } from '../log/log.js';
import { fileErrorResult, fileOwner, localMessage, MessageReadError, writeAll, type LocalDeliveryInfo } from './local-headers.js';
import type { DeliveryResult } from './transport.js';

export type { LocalDeliveryInfo } from './local-headers.js';

export interface MboxOptions {
  /** How long to wait for someone else's lock before giving up with tempfail; 30 s. */
  lockWaitMs?: number;
  /** A lock file not touched for this long is stale and removed; 5 min. */
  staleLockMs?: number;
  /** Pause between attempts to take the lock; 500 ms. */
  lockRetryMs?: number;
}

/**
 * Appends one message to the mbox `file` (created 0600, owned by `info.user` when we are root).
 * @returns ok once the message is appended and fsync'd; tempfail when the lock stays taken
 * longer than `lockWaitMs` or on a read, write or permission error; permfail 5.2.2 when the
 * quota or file size limit is hit.
 */
export async function deliverMbox(file: string, body: () => Readable, info: LocalDeliveryInfo, opts: MboxOptions = {}): Promise<DeliveryResult> {
  let unlock: (() => Promise<void>) | null;
  try {
    unlock = await takeDotlock(file, opts);
  } catch (err) {
    return fileErrorResult(`cannot lock ${file}`, err);
  }
  if (!unlock) {
    const ms = opts.lockWaitMs ?? 30_000;
    const waited = ms >= 1000 ? `${Math.round(ms / 1000)} s` : `${ms} ms`;
    return { outcome: 'tempfail', message: `4.2.0 ${file} is locked by another program (${file}.lock, waited ${waited})` };
  }
  try {
    return await append(file, body, info);
  } finally {
    await unlock();
  }
}

/** Takes FILE.lock; resolves to its release, or null when the wait ran out. */
async function takeDotlock(file: string, opts: MboxOptions): Promise<(() => Promise<void>) | null> {
  const lock = `${file}.lock`;
  const staleMs = opts.staleLockMs ?? 5 * 60_000;
  const deadline = Date.now() + (opts.lockWaitMs ?? 30_000);
  for (;;) {
    try {
      const fh = await fs.open(lock, 'wx', 0o644);
      try {
        await fh.writeFile(`${process.pid}\n`); // for people looking at a lock that stays
      } catch (err) {
        await fs.rm(lock, { force: true });
        throw err;
      } finally {
        await fh.close();
      }
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // lstat: a planted link's target is never looked at (nor its age taken for ours).
    const st = await fs.lstat(lock).catch(() => null);
    if (!st) continue; // released between our two calls
    if (st.isSymbolicLink()) {
      // No program makes its lock a link: someone planted it, maybe where we cannot remove it (a
      // sticky spool). Say so now rather than wait out a "lock" that never ends.
      log.warn(null, 'mbox lock is a symbolic link, not following it', { lock });
      throw Object.assign(new Error(`${lock} is a symbolic link, not a lock; fix: remove it (rm ${lock})`), { code: 'ELOOP' });
    }
    if (Date.now() - st.mtimeMs > staleMs) {
      log.warn(null, 'removing stale mbox lock', { lock, age_s: Math.round((Date.now() - st.mtimeMs) / 1000) });
      await fs.rm(lock, { force: true });
      continue;
    }
    if (Date.now() >= deadline) return null;
    await sleep(Math.min(opts.lockRetryMs ?? 500, Math.max(0, deadline - Date.now())));
  }
  // Keep the lock fresh while we hold it, so a slow append is not taken for a dead one.
  const refresh = setInterval(() => {
    const now = new Date();
    fs.utimes(lock, now, now).catch(() => undefined);
  }, Math.max(1000, staleMs / 5));
  refresh.unref();
  return async () => {
    clearInterval(refresh);
    await fs.rm(lock, { force: true }).catch((err: Error) => log.error(null, 'cannot remove our mbox lock', { lock, error: err.message }));
  };
}

async function append(file: string, body: () => Readable, info: LocalDeliveryInfo): Promise<DeliveryResult> {
  const owner = fileOwner(info);
  let fh: FileHandle;
  let created = true;
  // O_NOFOLLOW: a symlink planted in a shared spool must not redirect the user's mail.
  const flags = constants.O_RDWR | constants.O_APPEND | constants.O_NOFOLLOW;
  try {
    try {
      fh = await fs.open(file, flags | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      created = false;
      fh = await fs.open(file, flags);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return fileErrorResult(e.code === 'ELOOP' ? `${file} is a symbolic link` : `cannot open ${file}`, err);
  }

  let start = 0;
  try {
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close().catch(() => undefined);
      return { outcome: 'tempfail', message: `4.2.0 ${file} is not a regular file` };
    }
    // Postfix's safe_open(): a second name for the file (a hard link someone made in a shared
    // spool) or a file of someone else's would put the user's mail where another can read it.
    const bad = st.nlink > 1 ? `${file} has ${st.nlink} hard links` : owner === undefined && info.user && info.user.uid === process.getuid?.() && st.uid !== info.user.uid ? `${file} is owned by uid ${st.uid}, not by ${info.user.name}` : null;
    if (bad) {
      await fh.close().catch(() => undefined);
      log.warn(null, 'mbox refused', { file, reason: bad });
      return { outcome: 'tempfail', message: `4.2.0 cannot deliver to ${bad}; tidemail appends only to a mailbox with one name that its user owns; fix: move it aside (mv ${file} ${file}.suspect) so a new one is made` };
    }
    start = st.size;
    if (created && owner) await fh.chown(owner.uid, owner.gid);

    await writeAll(fh, Buffer.from(separatorAfter(await tail(fh, start)) + fromLine(info.sender, new Date())));
    const quote = new MboxrdQuote();
    for await (const chunk of pipeline(localMessage(body(), info), quote, () => undefined)) await writeAll(fh, chunk as Buffer);
    await writeAll(fh, Buffer.from(quote.endsWithNewline ? '\n' : '\n\n'));
    await fh.sync();
  } catch (err) {
    // Never leave half a message: the next one would start inside it.
    const cut = await fh
      .truncate(start)
      .then(() => fh.sync())
      .then(() => true, () => false);
    await fh.close().catch(() => undefined);
    if (!cut) log.error(null, 'could not cut a failed mbox append back', { file, size: start });
    return err instanceof MessageReadError ? { outcome: 'tempfail', message: `4.3.0 ${err.message}` } : fileErrorResult(`cannot write ${file}`, err);
  }
  // On disk since the fsync; a failing close cannot take that back.
  await fh.close().catch(() => undefined);
  return { outcome: 'ok', message: `2.0.0 delivered to ${file}` };
}

/** The last two bytes of the file (fewer when it is shorter). */
async function tail(fh: FileHandle, size: number): Promise<string> {
  if (size === 0) return '';
  const n = Math.min(2, size);
  const buf = Buffer.alloc(n);
  await fh.read(buf, 0, n, size - n);
  return buf.toString('latin1');
}

/** What to write so the next "From " line follows an empty line, as mbox readers require. */
function separatorAfter(end: string): string {
  if (end === '' || end === '\n' || end === '\n\n') return ''; // "\n" alone: a one-byte file
  return end.endsWith('\n') ? '\n' : '\n\n';
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** "From sender asctime\n"; the null sender is MAILER-DAEMON, as in Postfix and sendmail. */
export function fromLine(sender: string, when: Date): string {
  // The address is one word on this line (readers split it on blanks); Return-Path keeps it exact.
  const who = sender ? sender.replace(/\s/g, '_') : 'MAILER-DAEMON';
  const p2 = (n: number) => String(n).padStart(2, '0');
  const date = `${DAYS[when.getDay()]} ${MONTHS[when.getMonth()]} ${String(when.getDate()).padStart(2, ' ')} ${p2(when.getHours())}:${p2(when.getMinutes())}:${p2(when.getSeconds())} ${when.getFullYear()}`;
  return `From ${who} ${date}\n`;
}

const FROM = Buffer.from('From ');
const GT = 0x3e;
const LF = 0x0a;

/**
 * mboxrd quoting: a line matching /^>*From / gets one more ">" (readers remove one). Streams
 * without holding lines back: at a line start it only counts ">" and the letters of "From ".
 */
export class MboxrdQuote extends Transform {
  private atLineStart = true;
  private gt = 0;
  private matched = 0;
  /** Whether the output so far ends with a line end (true for no output). */
  endsWithNewline = true;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    const out: Buffer[] = [];
    for (let i = 0; i < chunk.length; ) {
      if (!this.atLineStart) {
        const nl = chunk.indexOf(LF, i);
        const end = nl === -1 ? chunk.length : nl + 1;
        out.push(chunk.subarray(i, end));
        i = end;
        this.atLineStart = nl !== -1;
        continue;
      }
      const b = chunk[i]!;
      if (this.matched === 0 && b === GT) {
        this.gt++;
        i++;
      } else if (b === FROM[this.matched]) {
        this.matched++;
        i++;
        if (this.matched === FROM.length) {
          out.push(Buffer.from(`${'>'.repeat(this.gt + 1)}From `));
          this.endLinePrefix();
        }
      } else {
        // Not a From_ line: give back what was counted; this byte is read as ordinary text.
        out.push(this.held());
        this.endLinePrefix();
      }
    }
    this.pushOut(out, cb);
  }

  override _flush(cb: TransformCallback): void {
    this.pushOut(this.atLineStart ? [this.held()] : [], cb);
  }

  private held(): Buffer {
    return Buffer.from('>'.repeat(this.gt) + FROM.subarray(0, this.matched).toString('latin1'));
  }

  private endLinePrefix(): void {
    this.gt = 0;
    this.matched = 0;
    this.atLineStart = false;
  }

  private pushOut(out: Buffer[], cb: TransformCallback): void {
    const data = Buffer.concat(out);
    if (data.length) this.endsWithNewline = data[data.length - 1] === LF;
    cb(null, data.length ? data : undefined);
  }
}
