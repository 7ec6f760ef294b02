// Writing one maildrop file: what `sendmail` (and `sendmail -bs`, `rmail`, inetd `smtpd`) do
// with a message. The directory, the file layout and the pickup are in maildrop.ts; this part
// is on the path of every cron `sendmail`, so it loads nothing the write does not need and
// uses synchronous fs calls: a submitting process has nothing to do while it waits for its
// file, and fs/promises costs ~1.5 ms to load plus a thread-pool round trip per call (issue 17).
//
// The file is written as .tmp-*, fsynced, renamed, and the directory fsynced (or, for a user who
// may not open it, the filesystem synced): after commit() returns, the message survives a crash
// or power loss.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { TempFailError, TidemailError } from '../errors.js';
import { randomHex } from '../random-id.js';
import { mib } from './free-space.js';
import type { MessageMeta, Spool } from './store.js';

export interface MaildropEnvelope {
  v: 1;
  sender: string;
  recipients: string[];
  via: string;
  uid: number;
  created: number;
}

/** The envelope's length at the very end of the file: 10 decimal digits and "\n". */
export const TRAILER_DIGITS = 10;

export function maildropDir(stateDir: string): string {
  return path.join(stateDir, 'maildrop');
}

/** For the daemon's pickup: off the event loop (a directory fsync on an SD card can take long). */
export function fsyncDir(dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    fs.open(dir, 'r', (err, fd) => {
      if (err) return reject(err);
      fs.fsync(fd, (syncErr) => fs.close(fd, () => (syncErr ? reject(syncErr) : resolve())));
    });
  });
}

function fsyncDirSync(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** sendmail's input went over max_message_size (EX_DATAERR: the input itself is the problem). */
export class MessageTooBigError extends TidemailError {
  override name = 'MessageTooBigError';
  constructor(readonly limit: number) {
    super(`message too big: more than ${formatSize(limit)} (max_message_size)`);
  }
}

export function formatSize(n: number): string {
  for (const [unit, f] of [['GiB', 1024 ** 3], ['MiB', 1024 ** 2], ['KiB', 1024]] as const) if (n >= f && n % f === 0) return `${n / f} ${unit}`;
  return `${n} bytes`;
}

export class MaildropSpool implements Spool {
  readonly msgid: string;
  private fd: number | null = null;
  private readonly tmpPath: string;
  private written = 0;

  /** `room`: bytes the message may take before it would eat into [queue] queue_minfree. */
  constructor(private readonly dir: string, private readonly opts: { maxSize?: number; room?: number } = {}) {
    // The directory is not listable for other users: the random name is what keeps them from
    // opening each other's files, so it must be unguessable (the kernel's CSPRNG).
    this.msgid = randomHex(12);
    this.tmpPath = path.join(dir, `.tmp-${this.msgid}`);
  }

  get size(): number {
    return this.written;
  }

  private handle(): number {
    if (this.fd !== null) return this.fd;
    const fd = fs.openSync(this.tmpPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o644);
    this.fd = fd;
    // 0644 whatever the caller's umask: the directory is not listable for others, so a random
    // name is private enough, and the daemon (another user) must be able to read it.
    fs.fchmodSync(fd, 0o644);
    return fd;
  }

  async write(chunk: Buffer): Promise<void> {
    // Refused while writing, so a huge message is not read to its end first.
    if (this.opts.maxSize !== undefined && this.written + chunk.length > this.opts.maxSize) throw new MessageTooBigError(this.opts.maxSize);
    if (this.opts.room !== undefined && this.written + chunk.length > this.opts.room) {
      throw new TempFailError(`cannot queue the message: ${path.dirname(this.dir)} has ${mib(this.opts.room)} free above the part of [queue] queue_minfree local mail may not use, and the message is larger; nothing was sent, try again later`);
    }
    // At an explicit offset: rewrite() and prepend() replace the file's content in place.
    writeAll(this.handle(), chunk, this.written);
    this.written += chunk.length;
  }

  readBack(): () => Readable {
    return () => (this.written ? fs.createReadStream(this.tmpPath, { start: 0, end: this.written - 1 }) : Readable.from([]));
  }

  // Edits read the message into memory: a maildrop message is at most max_message_size, and
  // only checks edit (the maildrop behind `sendmail -bs` has none; the pickup runs them).
  async rewrite(headerEnd: number, edit: { header?: (section: string) => string; body?: readonly Buffer[] }): Promise<void> {
    const all = this.content();
    const head = all.subarray(0, headerEnd);
    const newHead = edit.header ? Buffer.from(edit.header(head.toString('latin1')), 'latin1') : head;
    this.replace(Buffer.concat([newHead, ...(edit.body ? [Buffer.from('\r\n'), ...edit.body] : [all.subarray(headerEnd)])]));
  }

  async prepend(header: Buffer): Promise<void> {
    if (this.prepended) throw new Error('prepend() may be called once per message');
    this.prepended = true;
    this.replace(Buffer.concat([header, this.content()]));
  }

  private prepended = false;

  private content(): Buffer {
    return this.written ? fs.readFileSync(this.tmpPath).subarray(0, this.written) : Buffer.alloc(0);
  }

  private replace(data: Buffer): void {
    const fd = this.handle();
    fs.ftruncateSync(fd, 0);
    writeAll(fd, data, 0);
    this.written = data.length;
  }

  async commit(meta: MessageMeta): Promise<void> {
    const fd = this.handle();
    const env: MaildropEnvelope = {
      v: 1, sender: meta.sender, recipients: meta.recipients, via: meta.via, uid: process.getuid?.() ?? -1, created: Date.now(),
    };
    const json = JSON.stringify(env) + '\n';
    const trailer = Buffer.from(json + String(Buffer.byteLength(json)).padStart(TRAILER_DIGITS, '0') + '\n');
    writeAll(fd, trailer, this.written);
    fs.fsyncSync(fd);
    this.fd = null;
    fs.closeSync(fd);
    const final = path.join(this.dir, this.msgid);
    fs.renameSync(this.tmpPath, final);
    try {
      await syncEntry(this.dir, final);
    } catch (err) {
      // Not durable: take the message back, so the caller's retry does not send it twice.
      try {
        fs.unlinkSync(final);
      } catch {
        /* already gone */
      }
      throw new TempFailError(`cannot make the message durable in ${this.dir}: ${(err as Error).message}; nothing was sent, try again later`);
    }
  }

  async rollback(): Promise<void> {
    if (this.fd !== null) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* closed already */
      }
      this.fd = null;
    }
    try {
      fs.unlinkSync(this.tmpPath);
    } catch {
      /* never created, or committed */
    }
  }
}

/** writeSync may write less than asked (a signal, a full disk's last blocks): go on until done. */
function writeAll(fd: number, data: Buffer, position: number): void {
  for (let off = 0; off < data.length; ) off += fs.writeSync(fd, data, off, data.length - off, position + off);
}

/**
 * Makes a new directory entry durable. Root and the daemon's user fsync the directory; an
 * ordinary user cannot open the drop-only (1733) directory, so syncfs(2) on the file's
 * filesystem — `sync -f FILE` — flushes it, directory included; `sync` (sync(2), which waits
 * on Linux) where -f is missing (busybox without FEATURE_SYNC_FANCY).
 */
export async function syncEntry(dir: string, file: string): Promise<void> {
  try {
    return fsyncDirSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') throw err;
  }
  // Loaded here: root and the daemon's user never get this far.
  const { execFile } = await import('node:child_process');
  const run = (args: string[]) =>
    new Promise<void>((resolve, reject) => execFile('sync', args, { timeout: 60_000 }, (err) => (err ? reject(err) : resolve())));
  try {
    await run(['-f', file]);
  } catch {
    await run([]).catch((e: Error) => {
      throw new Error(`the maildrop directory cannot be fsync'd by this user and sync(1) failed: ${e.message.split('\n')[0]}`);
    });
  }
}
