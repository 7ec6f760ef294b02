// A small state disk (a tmpfs, so root only) that a test can fill and free at the moment it
// chooses: the daemon's state dir is `<mount>/state`, the filler file sits next to it.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tmpDir } from './tmp.js';

const mounts: string[] = [];

/** A tmpfs of `sizeKiB`; returns the state dir path inside it (not created). */
export function smallDisk(sizeKiB: number): string {
  const dir = tmpDir('tidemail-full-');
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKiB}k,mode=0755`, 'tidemail-test', dir]);
  mounts.push(dir);
  return path.join(dir, 'state');
}

/** The admin frees space: grow the tmpfs. */
export function growDisk(state: string, sizeKiB: number): void {
  execFileSync('mount', ['-o', `remount,size=${sizeKiB}k`, path.dirname(state)]);
}

const fillerOf = (state: string) => path.join(path.dirname(state), 'filler');

/** Fills the disk to the last byte (a filler file beside the state dir). Synchronous on purpose:
 * called from a smarthost hook, it must be done before the smarthost answers. */
export function fillDisk(state: string): void {
  const fd = fs.openSync(fillerOf(state), 'a');
  try {
    for (const size of [1 << 20, 64 << 10, 4 << 10, 512, 1]) {
      const buf = Buffer.alloc(size, 0x78);
      for (;;) {
        try {
          fs.writeSync(fd, buf);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** Removes the filler file. */
export function freeDisk(state: string): void {
  fs.rmSync(fillerOf(state), { force: true });
}

/** Unmounts every tmpfs made here (for test.after). */
export function unmountDisks(): void {
  for (const m of mounts.splice(0)) execFileSync('umount', ['-l', m]);
}
