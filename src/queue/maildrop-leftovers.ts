// What stays behind in the maildrop besides messages, and how long. Every local user can create
// entries there (1733), so nothing may pile up without bound (docs/DESIGN-NOTES.md, "Maildrop
// leftovers"):
//   .tmp-*  a sendmail that died mid-write: removed after a day (Postfix's postsuper -p age);
//   .who-*  a control-socket client's proof of its uid (control/peer.ts, valid for 60 s): removed
//           after 10 minutes, so proofs made and never used cannot fill the directory;
//   .bad-*  what the pickup refused and set aside for the administrator (Postfix deletes such
//           files at once): kept 7 days, at most 20 per owner and 100 in all, oldest first.
// Ages are the entry's ctime, which its owner cannot set back or ahead (utimes sets mtime and
// makes ctime "now"), and the set-aside rename renews it. Directories are only rmdir'ed: a
// recursive removal inside a tree the user controls could be led elsewhere by a symlink swap.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { log } from '../log/log.js';
import { randomHex } from '../random-id.js';

export const TEMP_MAX_AGE_MS = 86_400_000;
export const PROOF_MAX_AGE_MS = 10 * 60_000;
export const BAD_MAX_AGE_MS = 7 * 86_400_000;
export const BAD_MAX_PER_OWNER = 20;
export const BAD_MAX = 100;

/** The prefix MaildropSpool gives a file while it is written. */
export const TEMP_PREFIX = '.tmp-';
/** control/peer.ts's proof files. */
export const PROOF_PREFIX = '.who-';
/** maildrop.ts's refused entries, set aside. */
export const BAD_PREFIX = '.bad-';

/** The dot names the maildrop's own writers use; any other dot name was put there by other means. */
export function isLeftoverName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX) || name.startsWith(PROOF_PREFIX) || name.startsWith(BAD_PREFIX);
}

/**
 * What `tidemail status`, `tidemail check` and mailq count in the maildrop `dropDir`: messages sendmail
 * left for the pickup (names without a dot) and refused entries set aside (.bad-*). Zeros when
 * there is no maildrop yet; null when this user may not list it (1733: only root and the daemon).
 */
export function maildropCounts(dropDir: string): { waiting: number; setAside: number } | null {
  let names: string[];
  try {
    names = fs.readdirSync(dropDir);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT' ? { waiting: 0, setAside: 0 } : null;
  }
  return { waiting: names.filter((n) => !n.startsWith('.')).length, setAside: names.filter((n) => n.startsWith(BAD_PREFIX)).length };
}

/** The longest name a Linux filesystem takes, in bytes. */
const NAME_MAX = 255;

/**
 * Renames the refused entry `from` (named `name` in `dir`) to a .bad-* name that replaces
 * nothing, and returns that name: `.bad-NAME` while it is free and short enough (`exact`: `name`
 * is the entry's real name), else NAME shortened with random hex. rename(2) replaces its target,
 * and every user picks the names here: a file "X" must not overwrite another user's .bad-X, and
 * a .bad-X directory, a 251-byte name or a name that is not UTF-8 must not leave "X" refused
 * again at every scan for ever.
 */
export async function setAside(dir: string, from: string | Buffer, name: string, exact: boolean): Promise<string> {
  let to = `${BAD_PREFIX}${name}`;
  const taken = (n: string) => fsp.lstat(path.join(dir, n)).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOENT');
  if (!exact || Buffer.byteLength(to) > NAME_MAX || (await taken(to))) to = `${BAD_PREFIX}${shortened(name, 200)}-${randomHex(8)}`;
  await fsp.rename(from, path.join(dir, to));
  return to;
}

/** The first characters of `name` that fit in `bytes` bytes of UTF-8. */
function shortened(name: string, bytes: number): string {
  let out = '';
  for (const c of name) {
    if (Buffer.byteLength(out + c) > bytes) break;
    out += c;
  }
  return out;
}

const SWEEP_EVERY_MS = 60_000;
const sweptAt = new Map<string, number>();

/**
 * Whether `now` is less than `ms` after `then`. A clock stepped back (a router's RTC-less boot
 * clock or a fast clock corrected by NTP) puts `then` in the future: that is not "recently", or
 * the sweep would wait until the clock caught up again, months maybe.
 */
function within(now: number, then: number | undefined, ms: number): boolean {
  return then !== undefined && now >= then && now - then < ms;
}

interface Entry {
  name: string;
  uid: number;
  ctime: number;
  dir: boolean;
}

/**
 * Removes the leftovers among `names` (a listing of `dir`) that are past their time; `now` is
 * the caller's clock. One log line per kind of removal, with the count and the owners.
 */
export async function sweepLeftovers(dir: string, names: readonly string[], now: number): Promise<void> {
  // Once a minute (the daemon scans at least that often): a scan runs at every sendmail's poke,
  // and 100 set-aside files cost it 0.8 ms of lstat each time.
  if (within(now, sweptAt.get(dir), SWEEP_EVERY_MS)) return;
  sweptAt.set(dir, now);
  const stale: Record<'temp' | 'proof', Entry[]> = { temp: [], proof: [] };
  const bad: Entry[] = [];
  for (const name of names) {
    if (!isLeftoverName(name)) continue;
    const st = await fsp.lstat(path.join(dir, name)).catch(() => null);
    if (!st) continue; // gone already
    const e = { name, uid: st.uid, ctime: st.ctimeMs, dir: st.isDirectory() };
    if (name.startsWith(TEMP_PREFIX)) {
      if (now - e.ctime > TEMP_MAX_AGE_MS) stale.temp.push(e);
    } else if (name.startsWith(PROOF_PREFIX)) {
      if (now - e.ctime > PROOF_MAX_AGE_MS) stale.proof.push(e);
    } else bad.push(e);
  }
  await removeAll(dir, stale.temp, now, 'maildrop: removed unfinished files of sendmail runs that died', `older than ${TEMP_MAX_AGE_MS / 3_600_000} h`);
  await removeAll(dir, stale.proof, now, 'maildrop: removed unused proof files of control clients', `older than ${PROOF_MAX_AGE_MS / 60_000} min`);
  const { old, overOwner, overAll } = badToRemove(bad, now);
  await removeAll(dir, old, now, 'maildrop: removed set-aside (refused) files', `kept ${BAD_MAX_AGE_MS / 86_400_000} days`);
  await removeAll(dir, overOwner, now, 'maildrop: removed set-aside (refused) files', `more than ${BAD_MAX_PER_OWNER} of one owner, oldest first`);
  await removeAll(dir, overAll, now, 'maildrop: removed set-aside (refused) files', `more than ${BAD_MAX} in all, oldest first`);
}

/** Which .bad-* entries go: past their age, then the oldest beyond each owner's share, then beyond the total. */
function badToRemove(bad: Entry[], now: number): { old: Entry[]; overOwner: Entry[]; overAll: Entry[] } {
  const oldestFirst = (a: Entry, b: Entry) => a.ctime - b.ctime || (a.name < b.name ? -1 : 1);
  const old = bad.filter((e) => now - e.ctime > BAD_MAX_AGE_MS);
  const kept = bad.filter((e) => now - e.ctime <= BAD_MAX_AGE_MS).sort(oldestFirst);
  const byOwner = new Map<number, Entry[]>();
  for (const e of kept) {
    const list = byOwner.get(e.uid);
    if (list) list.push(e);
    else byOwner.set(e.uid, [e]);
  }
  const overOwner = [...byOwner.values()].flatMap((list) => list.slice(0, Math.max(0, list.length - BAD_MAX_PER_OWNER)));
  const going = new Set(overOwner);
  const rest = kept.filter((e) => !going.has(e));
  return { old, overOwner, overAll: rest.slice(0, Math.max(0, rest.length - BAD_MAX)) };
}

/** When the last "cannot remove" was logged: once an hour, not at every scan. */
let cannotRemoveLoggedAt: number | undefined;

async function removeAll(dir: string, entries: Entry[], now: number, msg: string, why: string): Promise<void> {
  if (!entries.length) return;
  let removed = 0;
  const failed: string[] = [];
  for (const e of entries) {
    const file = path.join(dir, e.name);
    // unlink removes only the name (a link, a FIFO), never what it points to.
    const done = await (e.dir ? fsp.rmdir(file) : fsp.unlink(file)).then(() => true, (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    if (done) removed++;
    else failed.push(e.name);
  }
  const uids = [...new Set(entries.map((e) => e.uid))].sort((a, b) => a - b);
  if (removed) log.info(null, msg, { count: removed, why, uids: uids.slice(0, 10).join(','), first: entries[0]!.name });
  // A directory with something in it: left to the administrator (see the header).
  if (failed.length && !within(now, cannotRemoveLoggedAt, 3_600_000)) {
    cannotRemoveLoggedAt = now;
    log.warn(null, 'maildrop: cannot remove old entries (a directory not empty?); remove them by hand', { dir, count: failed.length, first: failed[0]! });
  }
}
