// ~/.forward: a user's own redirection, in the target syntax of the aliases file (see
// aliases.ts) minus :include:. Read only when [local] forward is on.
//
// Safety, after sendmail's checks (Postfix instead runs the file's pipes as its owner): a
// .forward is honoured only when it is a regular file owned by the user (or root), not
// writable by group or others, in a home directory that others cannot write to (unless it
// is sticky). Otherwise whoever could write it could run commands or redirect the user's
// mail, so the file is ignored and mail goes to the mailbox. Pipes and files listed in a
// safe .forward carry their owner (LocalTarget `user`, `uid`) and run only when the delivering
// process is that user (a user's own unprivileged daemon); the daemon's user (tidemail) or root
// refuses them with 5.7.1 (deliver/local.ts): with its rights they could read the queue and
// every mbox. A per-user privileged delivery helper is future work.

import fs from 'node:fs';
import path from 'node:path';
import { readTargetFile } from './aliases.js';
import type { SystemUser } from './users.js';

/**
 * At most this many targets in one .forward (Postfix's virtual_alias_expansion_limit). Every
 * RCPT to the user expands them while the daemon waits: a 1 MiB file of 42,000 addresses held
 * the daemon's event loop ~1 s per RCPT, so anyone could stall all mail by sending RCPTs.
 */
export const MAX_FORWARD_TARGETS = 1000;

/** Why a parsed .forward is not followed for its size, or null. */
export function tooManyTargets(file: string, targets: readonly string[]): string | null {
  return targets.length > MAX_FORWARD_TARGETS ? `${file} lists ${targets.length} targets, more than ${MAX_FORWARD_TARGETS}` : null;
}

export type ForwardFile =
  /** No .forward (or an empty one): deliver to the mailbox. */
  | { kind: 'none' }
  /** A .forward we must not trust or cannot read; the mailbox gets the mail. */
  | { kind: 'ignored'; file: string; reason: string }
  | { kind: 'targets'; file: string; targets: string[]; errors: string[] };

/**
 * Reads `~user/.forward`.
 * @throws fs errors other than "missing", "not readable by us" (EACCES) and unsafe
 * ownership, e.g. EIO on a home on a failing disk: the caller defers delivery then.
 */
export async function readForwardFile(user: SystemUser): Promise<ForwardFile> {
  const file = path.join(user.home, '.forward');
  try {
    const dir = await fs.promises.stat(user.home);
    if (dir.mode & 0o022 && !(dir.mode & 0o1000)) {
      return { kind: 'ignored', file, reason: `home directory ${user.home} is writable by group or others` };
    }
    const f = await readTargetFile(file, [user.uid, 0]);
    if (!f.safe) return { kind: 'ignored', file, reason: f.unsafeReason ?? 'unsafe' };
    if (!f.targets.length && !f.errors.length) return { kind: 'none' };
    const tooMany = tooManyTargets(file, f.targets);
    if (tooMany) return { kind: 'ignored', file, reason: tooMany };
    return { kind: 'targets', file, targets: f.targets, errors: f.errors };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return { kind: 'none' };
    // We may run as an unprivileged user who cannot read a 0600 .forward; refusing all of
    // that user's mail would be worse than delivering to the mailbox.
    if (code === 'EACCES' || code === 'EISDIR' || code === 'EFBIG') return { kind: 'ignored', file, reason: (err as Error).message };
    throw err;
  }
}
