// The maildrop: where `sendmail` (and `sendmail -bs`, `rmail`, inetd `smtpd`) leave messages,
// so local submission works whether or not the daemon runs. Like Postfix's maildrop it is a
// sticky spool directory; ours is mode 1733 (anyone may create, only the daemon may list), and
// names are random, so users cannot read each other's mail.
//
// File layout: the message bytes (CRLF), then the envelope as one JSON line, then its length as
// 10 decimal digits and "\n". Writing a file (MaildropSpool) is in maildrop-spool.ts, which
// `sendmail` loads without the pickup below.
//
// The pickup trusts nothing in a file but its bytes: the submitter is the file's owner, the
// sender is checked against what that user may claim; the intake (src/intake/pickup.ts) puts our
// own Received line on top, qualifies, signs and queues it.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { lookupUser } from '../local/users.js';
import { log } from '../log/log.js';
import { isValidEnvelopeAddress } from '../message/address.js';
import { repeats } from '../log/repeats.js';
import { isLeftoverName, setAside, sweepLeftovers } from './maildrop-leftovers.js';
import { PickupSpace } from './maildrop-space.js';
import { TRAILER_DIGITS, fsyncDir, maildropDir, type MaildropEnvelope } from './maildrop-spool.js';
import type { Clock, QueueStore } from './store.js';

export { MaildropSpool, MessageTooBigError, TRAILER_DIGITS, formatSize, fsyncDir, maildropDir, syncEntry, type MaildropEnvelope } from './maildrop-spool.js';

/** The parsed tail of a maildrop file: the envelope and where the message bytes end. */
interface FoundEnvelope {
  env: MaildropEnvelope;
  bodyLength: number;
}

/** Parses the envelope at the end of an open maildrop file; null when it is not a complete one. */
async function envelopeOf(fh: fsp.FileHandle, size: number): Promise<FoundEnvelope | null> {
  try {
    if (size < TRAILER_DIGITS + 1) return null;
    const tail = Buffer.alloc(TRAILER_DIGITS + 1);
    await fh.read(tail, 0, tail.length, size - tail.length);
    const jsonLength = Number(tail.toString('ascii', 0, TRAILER_DIGITS));
    if (!Number.isInteger(jsonLength) || jsonLength <= 0 || jsonLength > Math.min(size - tail.length, MAX_ENVELOPE_BYTES)) return null;
    const json = Buffer.alloc(jsonLength);
    const start = size - tail.length - jsonLength;
    await fh.read(json, 0, jsonLength, start);
    const env = JSON.parse(json.toString('utf8')) as MaildropEnvelope;
    // Anyone can write this file: check the shape before anything uses it.
    if (env?.v !== 1 || typeof env.sender !== 'string' || !Array.isArray(env.recipients) || env.recipients.length === 0) return null;
    if (env.sender !== '' && !isValidEnvelopeAddress(env.sender)) return null;
    if (!env.recipients.every((r) => typeof r === 'string' && isValidEnvelopeAddress(r))) return null;
    return { env, bodyLength: start };
  } catch {
    return null;
  }
}

/** The envelope of a maildrop file (not following symlinks); null when it is not a complete one. */
export async function readMaildropEnvelope(file: string): Promise<(FoundEnvelope & { uid: number; ino: number }) | null> {
  const fh = await fsp.open(file, OPEN_FLAGS);
  try {
    const st = await fh.stat();
    if (!st.isFile()) return null;
    const found = await envelopeOf(fh, st.size);
    return found && { ...found, uid: st.uid, ino: st.ino };
  } finally {
    await fh.close();
  }
}

/** A maildrop file judged acceptable, handed to the intake (src/intake/pickup.ts) to queue. */
export interface PickedUp {
  /** The envelope sender the file's owner may use (senderFor). */
  sender: string;
  /** What the file claimed, when it differs from `sender`. */
  claimed?: string;
  recipients: string[];
  via: string;
  /** The file's owner: the submitter. */
  uid: number;
  login: string | null;
  /** maildrop:NAME:INODE, so a re-pickup after a crash is not a duplicate. */
  origin: string;
  /** The message bytes, read from the open file. */
  body: AsyncIterable<Buffer>;
}

/** What the pickup needs to know to judge a file: who may claim which sender, the size limit. */
export interface PickupPolicy {
  hostname: string;
  /** Our domains: an ordinary user may send as login@any of these (and @hostname). */
  domains: readonly string[];
  maxMessageSize: number;
  /** Login names that may set any envelope sender (like sendmail's trusted users). */
  trustedUsers: readonly string[];
  /** The daemon's configured run user, trusted like root even when `runq` picks up as root. */
  runUser: string;
}

export function pickupPolicy(config: Config): PickupPolicy {
  return { hostname: config.hostname, domains: config.local.domains, maxMessageSize: config.smtp.maxMessageSize, trustedUsers: config.trustedUsers, runUser: config.user };
}

export interface PickupOptions {
  /** Queues one accepted file: the intake's pickup source (src/intake/pickup.ts), with its checks. */
  submit: (m: PickedUp) => Promise<void>;
  /** Ages of leftover files (maildrop-leftovers.ts) are read from it; default Date.now. */
  now?: Clock;
  /** The free-space gate (maildrop-space.ts); the daemon keeps one across scans. Default: a new one. */
  space?: PickupSpace;
}

/**
 * Moves maildrop files into the queue. A file is removed only after its message is committed;
 * the file's name and inode are recorded as the message's origin, so a crash between commit
 * and unlink does not queue it twice.
 *
 * Every local user can create entries here, so each is opened without following symlinks and
 * without blocking (a FIFO), and judged on what fstat says about the opened file: a regular
 * file with one link. Its owner is the submitter; the envelope's own uid and via are not trusted.
 */
export async function pickupMaildrop(config: Config, store: Pick<QueueStore, 'hasOrigin'>, opts: PickupOptions): Promise<number> {
  const dir = maildropDir(config.stateDir);
  const policy = pickupPolicy(config);
  let listing: Buffer[];
  try {
    listing = await fsp.readdir(dir, { encoding: 'buffer' });
  } catch {
    return 0;
  }
  // A name that is not UTF-8 has no string form (node would name another, missing entry, and
  // refuse it at every scan for ever): set aside under a name we can say, like a misnamed file.
  const names: string[] = [];
  for (const raw of listing) {
    const name = raw.toString('utf8');
    if (Buffer.from(name, 'utf8').equals(raw)) names.push(name);
    else await refuse(dir, name, { reason: 'a name that is not UTF-8', action: 'set aside' }, {}, Buffer.concat([Buffer.from(dir + path.sep), raw]));
  }
  const users = new Map<number, string | null>();
  const loginOf = (uid: number) => {
    if (!users.has(uid)) users.set(uid, lookupUser(uid)?.name ?? null);
    return users.get(uid)!;
  };
  const space = opts.space ?? new PickupSpace();
  space.begin(config);
  const sorted = names.sort();
  const messages = (from: number) => sorted.slice(from).filter((n) => MAILDROP_NAME.test(n)).length;
  let count = 0;
  let held = 0;
  // Below the reserve nothing is opened: every file stays as it is until space is back.
  let paused = (await space.admit(0)) === 'pause' ? messages(0) : 0;
  for (let i = 0; i < sorted.length && !paused; i++) {
    const name = sorted[i]!;
    const file = path.join(dir, name);
    if (isLeftoverName(name)) continue; // .tmp-, .who-, .bad-: swept below when past their time
    if (!MAILDROP_NAME.test(name)) {
      // Only MaildropSpool names its files: anything else was put here by other means (e.g. a
      // local delivery led through a user's symlink into the maildrop), whoever owns it. Other
      // dot names too: set aside, they fall under the bounds of .bad-* instead of staying forever.
      await refuse(dir, name, { reason: 'not a name sendmail gives its files', action: 'set aside' });
      continue;
    }
    try {
      const r = await pickupFile(dir, name, store, policy, loginOf, opts, space);
      if (r === 'queued') count++;
      else if (r === 'pause') paused = messages(i); // this file and the rest
      else if (r === 'hold') held++;
    } catch (err) {
      // Once a minute (log/repeats.ts): a full disk fails every file at every scan; the files stay.
      repeats.log('maildrop: pickup failed', 'error', 'maildrop: pickup failed, will retry', { file, error: (err as Error).message });
    }
  }
  space.end(held + paused);
  if (count) await fsyncDir(dir).catch(() => undefined);
  try {
    await sweepLeftovers(dir, names, (opts.now ?? Date.now)());
  } catch (err) {
    log.error(null, 'maildrop: removing old leftovers failed, will retry', { dir, error: (err as Error).message });
  }
  return count;
}

/** The names MaildropSpool gives its files: 12 random bytes in hex. */
const MAILDROP_NAME = /^[0-9a-f]{24}$/;
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY;
const MAX_ENVELOPE_BYTES = 1024 * 1024;
const READ_CHUNK = 64 * 1024;

/** Why an entry is refused, and what to do with it: unlinking a name is safe for links, FIFOs and sockets (it removes only the name); directories and files we cannot read are set aside. */
type Refusal = { reason: string; action: 'remove' | 'set aside' };

/** `raw`: the entry's path as bytes, when `name` is not its exact name (not UTF-8). */
async function refuse(dir: string, name: string, r: Refusal, fields: Record<string, string | number> = {}, raw?: Buffer): Promise<void> {
  const file = path.join(dir, name);
  const entry = raw ?? file;
  let owner: number | undefined;
  if (fields.uid === undefined) {
    // Only for the log line: the entry could not be opened, so lstat is all there is.
    owner = await fsp.lstat(entry).then((st) => st.uid, () => undefined);
  }
  const done = r.action === 'remove'
    ? await fsp.unlink(entry).then(() => 'removed', (e: NodeJS.ErrnoException) => `not removed: ${e.code}`)
    : await setAside(dir, entry, name, !raw).then((to) => `set aside as ${to}`, (e: NodeJS.ErrnoException) => `not set aside: ${e.code}`);
  // One line per reason a minute (log/repeats.ts): any local user can drop thousands of these;
  // each stays as .bad-* (status and check count them) or is gone, as the line says.
  repeats.log(`maildrop refused: ${r.reason.replace(/\d+/g, 'N')}`, 'warn', 'maildrop: refused', { file, reason: r.reason, ...(owner !== undefined ? { uid: owner } : {}), ...fields, action: done });
}

/** What is wrong with an opened entry, judged on the opened file itself (fstat); null when it may be queued. */
function judge(st: fs.Stats, found: FoundEnvelope | null, policy: PickupPolicy): Refusal | null {
  if (st.isDirectory()) return { reason: 'a directory (not walked)', action: 'set aside' };
  if (!st.isFile()) return { reason: 'not a regular file (a FIFO or device)', action: 'remove' };
  // A second link means the file lives elsewhere too: someone else's file linked in.
  if (st.nlink !== 1) return { reason: `has ${st.nlink} links (hard-linked)`, action: 'remove' };
  if (!found) return { reason: 'malformed (not a complete maildrop file)', action: 'set aside' };
  if (found.bodyLength > policy.maxMessageSize) return { reason: `larger than max_message_size (${found.bodyLength} > ${policy.maxMessageSize} bytes)`, action: 'remove' };
  return null;
}

/** One maildrop entry: 'queued', left for space ('pause', 'hold': PickupSpace.admit), or false (gone, refused). */
async function pickupFile(dir: string, name: string, store: Pick<QueueStore, 'hasOrigin'>, policy: PickupPolicy, loginOf: (uid: number) => string | null, opts: PickupOptions, space: PickupSpace): Promise<'queued' | 'pause' | 'hold' | false> {
  const file = path.join(dir, name);
  let fh: fsp.FileHandle;
  try {
    fh = await fsp.open(file, OPEN_FLAGS);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    if (code === 'ELOOP') await refuse(dir, name, { reason: 'a symbolic link (never followed)', action: 'remove' });
    else if (code === 'ENXIO' || code === 'EOPNOTSUPP') await refuse(dir, name, { reason: 'not a regular file (a socket)', action: 'remove' });
    else if (code === 'EACCES' || code === 'EPERM') await refuse(dir, name, { reason: 'not readable by the daemon', action: 'set aside' });
    else throw err;
    return false;
  }
  try {
    const st = await fh.stat();
    const origin = `maildrop:${name}:${st.ino}`;
    const found = st.isFile() && st.nlink === 1 ? await envelopeOf(fh, st.size) : null;
    const refusal = judge(st, found, policy);
    if (refusal) {
      await refuse(dir, name, refusal, { uid: st.uid });
      return false;
    }
    if (!(await store.hasOrigin(origin))) {
      // Judged first: a refused file is set aside whatever the space (a rename takes none).
      const admitted = await space.admit(found!.bodyLength);
      if (admitted !== 'go') return admitted;
      await queueFile(fh, found!, st.uid, origin, policy, loginOf, opts);
    }
  } finally {
    await fh.close();
  }
  await fsp.unlink(file).catch(() => undefined);
  return 'queued';
}

/** Hands an accepted file to the intake, with the sender checked. */
async function queueFile(fh: fsp.FileHandle, found: FoundEnvelope, uid: number, origin: string, policy: PickupPolicy, loginOf: (uid: number) => string | null, opts: PickupOptions): Promise<void> {
  const { env, bodyLength } = found;
  const login = loginOf(uid);
  const sender = senderFor(uid, login, env.sender, policy);
  // Only labels of our local submission programs; "bounce" or "smtp" would claim a trust the file does not have.
  const via = LOCAL_VIAS.has(env.via) ? env.via : 'sendmail';
  await opts.submit({ sender, ...(sender !== env.sender ? { claimed: env.sender } : {}), recipients: env.recipients, via, uid, login, origin, body: fileRange(fh, bodyLength) });
}

/** The first `length` bytes of an open file, in chunks. */
async function* fileRange(fh: fsp.FileHandle, length: number): AsyncGenerator<Buffer> {
  for (let pos = 0; pos < length;) {
    const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK, length - pos));
    const { bytesRead } = await fh.read(chunk, 0, chunk.length, pos);
    if (bytesRead === 0) throw new Error('the file shrank while being read');
    yield chunk.subarray(0, bytesRead);
    pos += bytesRead;
  }
}

const LOCAL_VIAS = new Set(['sendmail', 'sendmail-bs', 'rmail', 'smtpd']);

/**
 * The envelope sender a maildrop file from `uid` may have: root, the daemon's own user and
 * trusted users keep what they set; anyone else may use their login name at one of our domains,
 * and is otherwise rewritten to login@hostname (what sendmail and Postfix do with -f).
 */
export function senderFor(uid: number, login: string | null, claimed: string, policy: PickupPolicy): string {
  if (uid === 0 || uid === process.getuid?.()) return claimed;
  if (login && (login === policy.runUser || policy.trustedUsers.includes(login))) return claimed;
  const own = `${login ?? `uid${uid}`}`;
  const at = claimed.lastIndexOf('@');
  const domain = claimed.slice(at + 1).toLowerCase();
  if (login && at > 0 && claimed.slice(0, at) === login && (domain === policy.hostname.toLowerCase() || policy.domains.includes(domain))) return claimed;
  return `${own}@${policy.hostname}`;
}

