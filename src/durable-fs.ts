// fsync helpers for the synchronous write-temp-then-rename paths (secret files, rotated tokens,
// the config switch): one place for the "some filesystems refuse fsync on a directory" rule.

import fs from 'node:fs';

/** fsyncs a file by name. @throws what open/fsync throw. */
export function syncFileSync(file: string): void {
  const fd = fs.openSync(file, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * fsyncs a directory so a rename in it is durable. Best effort: some filesystems refuse fsync on
 * a directory (EINVAL), and the rename has happened all the same.
 */
export function syncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    /* see above */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
