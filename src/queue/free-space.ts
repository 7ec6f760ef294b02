// The queue's free-space reserve ([queue] queue_minfree, as Postfix's): new mail is refused up
// front — 452 4.3.1 at MAIL FROM, EX_TEMPFAIL from sendmail — while the filesystem of state_dir
// has less than queue_minfree free, or less than queue_minfree + 1.5 × the client's SIZE=. What
// stays free is for what the queue must still write for mail it already took: delivery
// records, DSNs, the maildrop's pickup (which waits below the reserve and never copies into its
// lower half: maildrop-space.ts). Without it the disk fills during DATA, the client has
// sent the whole message for a 452, and a result that cannot be recorded stalls the queue.
// No imports beyond node:fs: sendmail's bundle loads this file (issue 17).

import fs from 'node:fs';

/** Room a message needs per byte of its SIZE=: the queue copy and its transient copy (Postfix's 1.5). */
export const SIZE_FACTOR = 1.5;

const MiB = 1024 * 1024;

/**
 * The reserve when queue_minfree is "auto" (the default): two of the largest messages, at least
 * 16 MiB — but never more than a tenth of the filesystem, so a router's 20 MB of flash keeps
 * 2 MB instead of refusing all mail (docs/DESIGN-NOTES.md).
 */
export function autoMinfree(maxMessageSize: number, filesystemBytes: number): number {
  return Math.min(Math.max(16 * MiB, 2 * maxMessageSize), Math.floor(filesystemBytes / 10));
}

/** The reserve in bytes: queue_minfree as set, or autoMinfree of this filesystem. */
export function reserveOf(queueMinfree: number | null, maxMessageSize: number, filesystemBytes: number): number {
  return queueMinfree ?? autoMinfree(maxMessageSize, filesystemBytes);
}

/** What statfs says, in bytes: free as the daemon's user sees it (f_bavail: without root's reserved blocks), and the size. */
export interface Room {
  free: number;
  size: number;
}

export function roomOf(st: fs.StatsFs): Room {
  return { free: Number(st.bavail) * Number(st.bsize), size: Number(st.blocks) * Number(st.bsize) };
}

/** The room on the filesystem of `dir`, or null when statfs fails (then nothing is refused). */
export function roomSync(dir: string): Room | null {
  try {
    return roomOf(fs.statfsSync(dir));
  } catch {
    return null;
  }
}

/** True when a message announced as `size` bytes (0: unknown) must wait for space. */
export function shortOfSpace(free: number, minfree: number, size: number): boolean {
  return free < minfree + SIZE_FACTOR * size;
}

/** "12.3 MiB" for messages: whole MiB lose too much near a small reserve. */
export function mib(n: number): string {
  return `${(n / MiB).toFixed(n < 10 * MiB ? 1 : 0)} MiB`;
}

export interface SpaceVerdict {
  free: number;
  /** The reserve it was judged against. */
  minfree: number;
  /** Below queue_minfree itself: every new message is refused, whatever its size. */
  belowReserve: boolean;
}

/**
 * The daemon's view of its free space: one async statfs per `ttlMs` however many MAIL commands
 * ask (a flood costs one a second), and a verdict without waiting while the figure is fresh.
 * `onChange` hears when the state_dir drops below queue_minfree and when it is back above, once
 * each — the log's warning lines, not one per MAIL.
 */
export class QueueSpace {
  private figure: Room | null = null;
  private at = -Infinity;
  private pending: Promise<Room | null> | null = null;
  private below = false;

  constructor(
    private readonly dir: string,
    private readonly onChange: (below: boolean, free: number, minfree: number) => void = () => undefined,
    private readonly ttlMs = 1000,
  ) {}

  /** The room: synchronous while the last statfs is under ttlMs old. */
  room(): Room | null | Promise<Room | null> {
    if (performance.now() - this.at < this.ttlMs) return this.figure;
    return (this.pending ??= fs.promises.statfs(this.dir).then(
      (st) => this.settle(roomOf(st)),
      // Unreadable (an odd filesystem, ENOENT before the first start): no figure, no refusal;
      // a write that fails for space is still answered 452 by the commit.
      () => this.settle(null),
    ));
  }

  private settle(room: Room | null): Room | null {
    this.figure = room;
    this.at = performance.now();
    this.pending = null;
    return room;
  }

  /** null: room for a message of `size` (0 when not announced) above the reserve `minfree(filesystem size)`; else why not. */
  check(minfree: (filesystemBytes: number) => number, size: number): SpaceVerdict | null | Promise<SpaceVerdict | null> {
    const room = this.room();
    if (room instanceof Promise) return room.then((r) => this.judge(r, minfree, size));
    return this.judge(room, minfree, size);
  }

  private judge(room: Room | null, reserve: (filesystemBytes: number) => number, size: number): SpaceVerdict | null {
    if (room === null) return null;
    const { free } = room;
    const minfree = reserve(room.size);
    const below = free < minfree;
    if (below !== this.below) {
      this.below = below;
      this.onChange(below, free, minfree);
    }
    return shortOfSpace(free, minfree, size) ? { free, minfree, belowReserve: below } : null;
  }
}
