// ~/.forward read by the root helper for the unprivileged daemon (which cannot enter a 0700
// home), as OpenSMTPD's parent opens .forward for its lookup process. Root reads it, so it is
// read more strictly than forward.ts does: never through a symbolic link (O_NOFOLLOW: a link
// to /etc/shadow would hand its lines to the daemon), one link only (no hard link to a file
// of root's), owned by the user or root, not writable by group or others, in a home the user
// owns that others cannot write to (unless sticky). Anything else: ignored, mailbox delivery.

import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseTargetFile } from '../local/aliases.js';
import { tooManyTargets, type ForwardFile } from '../local/forward.js';
import type { SystemUser } from '../local/users.js';

/** Room for MAX_FORWARD_TARGETS lines: parsing 1 MiB as root at every RCPT (~100 ms) stalled deliveries. */
const MAX = 64 * 1024;
const MAX_TEXT = '64 KiB';

export async function readForwardAsRoot(user: SystemUser): Promise<ForwardFile> {
  const file = path.join(user.home, '.forward');
  let home;
  try {
    home = await fs.lstat(user.home);
    // Root's link (/home/ann -> /data/ann) is the admin's: followed, as for delivery (policy.ts).
    if (home.isSymbolicLink() && home.uid === 0) home = await fs.stat(user.home);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'none' };
    throw err;
  }
  if (!home.isDirectory()) return { kind: 'ignored', file, reason: `home ${user.home} is not a directory` };
  if (home.uid !== user.uid && home.uid !== 0) return { kind: 'ignored', file, reason: `home directory ${user.home} is owned by uid ${home.uid}, not by ${user.name}` };
  if (home.mode & 0o022 && !(home.mode & 0o1000)) return { kind: 'ignored', file, reason: `home directory ${user.home} is writable by group or others` };
  let fh;
  try {
    fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'none' };
    if (code === 'ELOOP') return { kind: 'ignored', file, reason: `${file} is a symbolic link` };
    throw err;
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { kind: 'ignored', file, reason: `${file} is not a regular file` };
    if (st.nlink !== 1) return { kind: 'ignored', file, reason: `${file} has ${st.nlink} hard links` };
    if (st.uid !== user.uid && st.uid !== 0) return { kind: 'ignored', file, reason: `${file} is owned by uid ${st.uid}` };
    // Root reads it, so only what the user could read themselves: a root-owned 0600 file left
    // in their home (sudo, a root cp) renamed to .forward would otherwise show its lines in the
    // RCPT reply ("… is not an address"). Postfix reads .forward as the user, with the same result.
    if (st.uid === 0 && !(st.mode & 0o004)) return { kind: 'ignored', file, reason: `${file} is owned by root and not readable by ${user.name}` };
    if (st.mode & 0o022) return { kind: 'ignored', file, reason: `${file} is writable by group or others` };
    if (st.size > MAX) return { kind: 'ignored', file, reason: `${file} is larger than ${MAX_TEXT}` };
    // Never more than fstat said, even if the user makes the file grow after it (readFile would
    // take up to 2 GB, as root, on every RCPT); one byte more tells that it grew
    // (being edited: the mail waits rather than skip the forward).
    const buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (let r; n < buf.length && (r = await fh.read(buf, n, buf.length - n, n)).bytesRead > 0; ) n += r.bytesRead;
    if (n > st.size) throw new Error(`${file} changed while it was read; try again`); // the mail waits
    const { targets, errors } = parseTargetFile(buf.subarray(0, n).toString('utf8'), file);
    const tooMany = tooManyTargets(file, targets);
    if (tooMany) return { kind: 'ignored', file, reason: tooMany };
    return targets.length || errors.length ? { kind: 'targets', file, targets, errors } : { kind: 'none' };
  } finally {
    await fh.close();
  }
}
