// The maildrop: where `sendmail` (and `sendmail -bs`, `rmail`, inetd `smtpd`) leave messages,
// so local submission works whether or not the daemon runs. Like Postfix's maildrop it is a
// sticky spool directory; ours is mode 1733 (anyone may create, only the daemon may list), and
// names are random, so users cannot read each other's mail.
//
// File layout: the message bytes (CRLF), then the envelope as one JSON line, then its length as
// 10 decimal digits and "\n". The file is written as .tmp-*, fsynced, renamed, and the
// directory fsynced: after commit() returns, the message survives a crash or power loss.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { log } from '../log/log.js';
import type { MessageMeta, QueueStore, Spool } from './store.js';

export interface MaildropEnvelope {
  v: 1;
  sender: string;
  recipients: string[];
  via: string;
  uid: number;
  created: number;
}

const TRAILER_DIGITS = 10;

export function maildropDir(stateDir: string): string {
  return path.join(stateDir, 'maildrop');
}

export async function fsyncDir(dir: string): Promise<void> {
  const fd = await fsp.open(dir, 'r');
  try {
    await fd.sync();
  } finally {
    await fd.close();
  }
}

export class MaildropSpool implements Spool {
  readonly msgid: string;
  private fh: fsp.FileHandle | null = null;
  private readonly tmpPath: string;
  private written = 0;

  constructor(private readonly dir: string) {
    this.msgid = randomBytes(12).toString('hex');
    this.tmpPath = path.join(dir, `.tmp-${this.msgid}`);
  }

  get size(): number {
    return this.written;
  }

  private async handle(): Promise<fsp.FileHandle> {
    // 0644: the directory is not listable for others, so a random name is private enough,
    // and the daemon (another user) must be able to read it.
    this.fh ??= await fsp.open(this.tmpPath, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    return this.fh;
  }

  async write(chunk: Buffer): Promise<void> {
    const fh = await this.handle();
    await fh.write(chunk);
    this.written += chunk.length;
  }

  async commit(meta: MessageMeta): Promise<void> {
    const fh = await this.handle();
    const env: MaildropEnvelope = {
      v: 1, sender: meta.sender, recipients: meta.recipients, via: meta.via, uid: process.getuid?.() ?? -1, created: Date.now(),
    };
    const json = JSON.stringify(env) + '\n';
    await fh.write(json + String(Buffer.byteLength(json)).padStart(TRAILER_DIGITS, '0') + '\n');
    await fh.sync();
    await fh.close();
    this.fh = null;
    await fsp.rename(this.tmpPath, path.join(this.dir, this.msgid));
    // Ordinary users may not open the drop-only directory to fsync it. The file's data is
    // already synced; the rename is ordered by the filesystem journal (ext4, btrfs, f2fs), and a
    // running daemon imports the file into the fsync'd queue within moments of the poke.
    await fsyncDir(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EACCES' && err.code !== 'EPERM') throw err;
    });
  }

  async rollback(): Promise<void> {
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
    await fsp.unlink(this.tmpPath).catch(() => undefined);
  }
}

/** Reads a maildrop file's envelope; null when the file is not (yet) a complete maildrop file. */
export async function readMaildropEnvelope(file: string): Promise<{ env: MaildropEnvelope; bodyLength: number; uid: number; ino: number } | null> {
  const fh = await fsp.open(file, 'r');
  try {
    const st = await fh.stat();
    if (st.size < TRAILER_DIGITS + 1) return null;
    const tail = Buffer.alloc(TRAILER_DIGITS + 1);
    await fh.read(tail, 0, tail.length, st.size - tail.length);
    const jsonLength = Number(tail.toString('ascii', 0, TRAILER_DIGITS));
    if (!Number.isInteger(jsonLength) || jsonLength <= 0 || jsonLength > st.size) return null;
    const json = Buffer.alloc(jsonLength);
    const start = st.size - tail.length - jsonLength;
    await fh.read(json, 0, jsonLength, start);
    const env = JSON.parse(json.toString('utf8')) as MaildropEnvelope;
    if (env.v !== 1 || !Array.isArray(env.recipients)) return null;
    return { env, bodyLength: start, uid: st.uid, ino: st.ino };
  } catch {
    return null;
  } finally {
    await fh.close();
  }
}

/**
 * Moves maildrop files into the queue. A file is removed only after its message is committed;
 * the file's name and inode are recorded as the message's origin, so a crash between commit
 * and unlink does not queue it twice.
 */
/**
 * Runs between writing a picked-up body and committing it (checks that add headers, such as DKIM
 * signing of local mail); `header` is the message's header section (up to 64 KiB).
 */
export type BeforeCommit = (spool: Spool, header: string, meta: MessageMeta) => Promise<void>;

export async function pickupMaildrop(dir: string, store: Pick<QueueStore, 'openMessage' | 'hasOrigin'>, onCommitted?: (msgid: string) => void, beforeCommit?: BeforeCommit): Promise<number> {
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch {
    return 0;
  }
  let count = 0;
  for (const name of names.sort()) {
    const file = path.join(dir, name);
    if (name.startsWith('.tmp-')) {
      await removeStaleTemp(file);
      continue;
    }
    if (name.startsWith('.')) continue;
    const found = await readMaildropEnvelope(file);
    if (!found) {
      log.warn(null, 'maildrop: ignoring malformed file', { file });
      await fsp.rename(file, path.join(dir, `.bad-${name}`)).catch(() => undefined);
      continue;
    }
    const origin = `maildrop:${name}:${found.ino}`;
    if (!(await store.hasOrigin(origin))) {
      const spool = store.openMessage();
      try {
        const stream = fs.createReadStream(file, { start: 0, end: found.bodyLength - 1, highWaterMark: 64 * 1024 });
        let head: Buffer | null = beforeCommit ? Buffer.alloc(0) : null;
        if (found.bodyLength > 0) {
          for await (const chunk of stream as AsyncIterable<Buffer>) {
            if (head && head.length < 64 * 1024) head = Buffer.concat([head, chunk]);
            await spool.write(chunk);
          }
        }
        const meta: MessageMeta = { sender: found.env.sender, recipients: found.env.recipients, via: found.env.via, client: `uid=${found.uid}`, origin };
        if (beforeCommit && head) {
          const text = head.subarray(0, 64 * 1024).toString('utf8');
          const end = text.search(/\r?\n\r?\n/);
          await beforeCommit(spool, end < 0 ? text : text.slice(0, end + 1), meta);
        }
        await spool.commit(meta);
      } catch (err) {
        await spool.rollback();
        log.error(null, 'maildrop: pickup failed, will retry', { file, error: (err as Error).message });
        continue;
      }
      log.info(spool.msgid, 'accepted', { from: `<${found.env.sender}>`, nrcpt: found.env.recipients.length, size: found.bodyLength, via: found.env.via, uid: found.uid });
      onCommitted?.(spool.msgid);
      count++;
    }
    await fsp.unlink(file).catch(() => undefined);
  }
  if (count) await fsyncDir(dir).catch(() => undefined);
  return count;
}

async function removeStaleTemp(file: string): Promise<void> {
  try {
    const st = await fsp.stat(file);
    if (Date.now() - st.mtimeMs > 86_400_000) await fsp.unlink(file);
  } catch {
    /* gone already */
  }
}
