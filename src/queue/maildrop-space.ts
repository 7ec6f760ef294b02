// The maildrop pickup under a tight disk: a file's copy into the queue needs room on the same
// filesystem, and below [queue] queue_minfree that room is kept for what the queue owes mail it
// already took (delivery records, DSNs). So the pickup waits while free space is below the
// reserve: the files stay in the maildrop as they are (sendmail exited 0 for them; nothing is
// lost), and the daemon looks again every few seconds until the space is back.
//
// A single file whose copy would reach into the lower half of the reserve — the half sendmail
// does not write into either (cli/sendmail-submit.ts) — waits too, while smaller files go on:
// Postfix's pickup just tries and meets a full disk, but a copy that runs the disk to 0 fails
// every other write of the queue at that moment, and would do so again at each scan
// (docs/DESIGN-NOTES.md, "Maildrop pickup under a tight disk").

import fsp from 'node:fs/promises';
import type { Config } from '../config/schema.js';
import { log } from '../log/log.js';
import { mib, reserveOf, roomOf, SIZE_FACTOR, type Room } from './free-space.js';

/** The part of the reserve no copy may reach into: the same half sendmail leaves alone. */
export const PICKUP_FLOOR_SHARE = 0.5;

/** What the pickup waits for; `tidemail status` shows it (control/commands.ts). */
export interface PickupWait {
  /** When it started waiting. */
  since: number;
  /** Maildrop files left in place for space at the last scan. */
  files: number;
  free: number;
  /** Free space it waits for: the reserve, or a large file's copy above the reserve's lower half. */
  needed: number;
  reserve: number;
  /** 'reserve': below queue_minfree, nothing is picked up; 'size': only files too large for the room wait. */
  why: 'reserve' | 'size';
}

export type Admission = 'go' | 'pause' | 'hold';

/** The free-space gate of one pickup (the daemon keeps one across scans, so it logs the changes only). */
export class PickupSpace {
  private wait: PickupWait | null = null;
  private scan: { free: number; reserve: number; files: number; needed: number; why: 'reserve' | 'size' } | null = null;
  /** This scan's figure, less what was copied since it was read (each copy counted 1.5 times). */
  private room: Room | null = null;
  private spent = 0;
  private config: Config | null = null;

  constructor(private readonly now: () => number = Date.now) {}

  /** Set while files wait for space. */
  get waiting(): PickupWait | null {
    return this.wait;
  }

  /** Before a scan: the configuration it runs with (a reload's queue_minfree applies at once). */
  begin(config: Config): void {
    this.config = config;
    this.scan = null;
    this.room = null;
    this.spent = 0;
  }

  /**
   * Before copying a file of `size` body bytes (0: before the scan): 'go'; 'pause' — below the
   * reserve, this file and all after it wait; 'hold' — this file's copy does not fit, it alone waits.
   */
  async admit(size: number): Promise<Admission> {
    if (!this.config) return 'go';
    const { queue, smtp, stateDir } = this.config;
    let room = this.room;
    // One statfs a scan while the estimate says there is room; a fresh one when it says there is not.
    if (!room || this.verdict(room.free - this.spent, reserveOf(queue.queueMinfree, smtp.maxMessageSize, room.size), size) !== 'go') {
      room = await fsp.statfs(stateDir).then(roomOf, () => null);
      this.room = room;
      this.spent = 0;
    }
    if (!room) return 'go'; // unreadable: nothing is held (the commit's ENOSPC still answers)
    const free = room.free - this.spent;
    const reserve = reserveOf(queue.queueMinfree, smtp.maxMessageSize, room.size);
    const v = this.verdict(free, reserve, size);
    if (v === 'go') {
      this.spent += SIZE_FACTOR * size;
      return 'go';
    }
    const needed = v === 'pause' ? reserve : neededFor(reserve, size);
    const s = (this.scan ??= { free, reserve, files: 0, needed, why: v === 'pause' ? 'reserve' : 'size' });
    s.free = free;
    s.reserve = reserve;
    if (v === 'pause') {
      s.why = 'reserve';
      s.needed = reserve;
    } else if (s.why === 'size') s.needed = Math.max(s.needed, needed);
    return v;
  }

  private verdict(free: number, reserve: number, size: number): Admission {
    if (reserve === 0) return 'go'; // queue_minfree = "0": no reserve, a full disk is the commit's ENOSPC
    if (free < reserve) return 'pause';
    return free < neededFor(reserve, size) ? 'hold' : 'go';
  }

  /** After a scan: `files` were left in the maildrop for space. Logs only when waiting starts or ends. */
  end(files: number): void {
    const s = this.scan;
    const stateDir = this.config?.stateDir ?? '';
    if (files > 0 && s) {
      const fields = { files, free: mib(s.free), needed: mib(s.needed), queue_minfree: mib(s.reserve), state_dir: stateDir };
      if (!this.wait) {
        const why = s.why === 'reserve' ? 'free space below queue_minfree' : 'a file too large for the free space above the reserve';
        log.warn(null, `maildrop pickup paused: ${why}; the files wait in the maildrop`, { ...fields, fix: `free space on the filesystem of ${stateDir}, or lower [queue] queue_minfree; the pickup goes on by itself` });
      }
      this.wait = { since: this.wait?.since ?? this.now(), files, free: s.free, needed: s.needed, reserve: s.reserve, why: s.why };
    } else if (this.wait) {
      const was = this.wait;
      this.wait = null;
      const free = this.room ? this.room.free : was.free;
      // Still short, but the waiting files went another way (removed by hand): no "space is back".
      const msg = s ? 'maildrop pickup: no file waits for space any more' : 'maildrop pickup resumed: free space is back';
      log.warn(null, msg, { free: mib(free), needed: mib(was.needed), queue_minfree: mib(was.reserve), waited: `${Math.round((this.now() - was.since) / 1000)}s` });
    }
  }
}

/** Free space a file of `size` bytes needs to be copied without reaching into the reserve's lower half. */
export function neededFor(reserve: number, size: number): number {
  return Math.floor(reserve * PICKUP_FLOOR_SHARE) + SIZE_FACTOR * size;
}

/** The status line: "maildrop pickup paused: N files wait, free X < reserve Y". */
export function describeWait(w: PickupWait): string {
  const files = `${w.files} file${w.files === 1 ? ' waits' : 's wait'}`;
  if (w.why === 'reserve') return `maildrop pickup paused: ${files}, free ${mib(w.free)} < reserve ${mib(w.reserve)} ([queue] queue_minfree; it goes on by itself when space is freed)`;
  return `maildrop pickup paused: ${files}, free ${mib(w.free)} < ${mib(w.needed)} needed to copy ${w.files === 1 ? 'it' : 'the largest'} (1.5 x its size above half of the reserve ${mib(w.reserve)})`;
}
