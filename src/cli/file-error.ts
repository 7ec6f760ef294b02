// A command failing on a file or directory outside the state dir (dkim keygen --out, tls
// selfsigned --out, the users file, an aliases file): what, where and the fix, with a sysexits
// code, instead of "internal error". The state dir has its own words (queue/state-error.ts).

import path from 'node:path';
import { whyNotWritable } from '../queue/state-error.js';

const WRITES = new Set(['mkdir', 'open', 'rename', 'unlink', 'rmdir', 'write', 'copyfile', 'symlink', 'link', 'chmod', 'chown', 'fsync', 'utime']);

interface Described {
  text: string;
  code: number;
}

/** One message and an exit code for an errno error that names a path; null for anything else. */
export function describeFileError(err: unknown): Described | null {
  let e = err as NodeJS.ErrnoException | undefined;
  if (!e || typeof e.code !== 'string' || typeof e.path !== 'string' || !e.syscall) return null;
  // A recursive mkdir under a read-only or foreign directory reports ENOENT: ask the deepest
  // existing ancestor why it cannot be written.
  if (e.code === 'ENOENT' && e.syscall === 'mkdir') e = whyNotWritable(e.path) ?? e;
  const where = e.path!;
  const verb = WRITES.has(e.syscall!) ? 'write' : 'read';
  switch (e.code) {
    case 'EROFS':
      return { text: `cannot ${verb} ${where}: the filesystem is read-only\n  fix: remount it read-write (mount -o remount,rw), or choose a path on a writable filesystem`, code: 73 };
    case 'EACCES':
    case 'EPERM':
      return { text: `cannot ${verb} ${where}: permission denied\n  fix: run this as root, or as the user who owns ${path.dirname(where)}`, code: 77 };
    case 'ENOSPC':
    case 'EDQUOT':
      return { text: `cannot write ${where}: no space left on the device\n  fix: free space on that filesystem (df -h ${path.dirname(where)}) and run it again`, code: 75 };
    case 'ENOENT':
      return verb === 'write'
        ? { text: `cannot write ${where}: a directory on the way does not exist\n  fix: create ${path.dirname(where)}, or give another path`, code: 73 }
        : { text: `cannot read ${where}: no such file\n  fix: check the path`, code: 66 };
    case 'ENOTDIR':
    case 'EISDIR':
    case 'EEXIST':
      return { text: `cannot ${verb} ${where}: ${e.code === 'EISDIR' ? 'it is a directory' : e.code === 'EEXIST' ? 'it already exists' : 'a part of the path is not a directory'}\n  fix: give another path`, code: 73 };
    case 'EIO':
      return { text: `cannot ${verb} ${where}: input/output error (a failing disk or card)\n  fix: check the disk (dmesg)`, code: 74 };
    default:
      return null;
  }
}

