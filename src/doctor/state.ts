// Probe: the state directory (queue.sqlite, maildrop) is writable, fsync works on it, and it sits
// on a filesystem that keeps data across a reboot and honours fsync — tidemail's promise that
// accepted mail is never lost rests on it.

import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/schema.js';
import { Db } from '../queue/db.js';
import { mib, reserveOf, roomOf } from '../queue/free-space.js';
import { BAD_MAX_AGE_MS, maildropCounts } from '../queue/maildrop-leftovers.js';
import { maildropDir } from '../queue/maildrop-spool.js';
import { describeWait } from '../queue/maildrop-space.js';
import { damaged, isCorruption, preflightQueue, QUEUE_FILE, quickCheck } from '../queue/integrity.js';
import { QUEUE_MIGRATIONS } from '../queue/sqlite.js';
import { StateError } from '../queue/state-error.js';
import { fail, ok, skip, warn, type Finding } from './finding.js';

const AREA = 'state dir';
// statfs f_type magic numbers (linux/magic.h).
const TMPFS = 0x01021994;
const RAMFS = 0x858458f6;
const NFS = 0x6969;
const LOW_SPACE = 50 * 1024 * 1024;
const NO_SPACE = 5 * 1024 * 1024;

/** The mount (point, type, options) holding `dir`, from /proc/mounts. */
function mountOf(dir: string): { point: string; type: string; options: string[] } | null {
  let text: string;
  try {
    text = fs.readFileSync('/proc/mounts', 'utf8');
  } catch {
    return null;
  }
  let best: { point: string; type: string; options: string[] } | null = null;
  for (const line of text.split('\n')) {
    const [, point, type, options] = line.split(' ');
    if (!point || !type) continue;
    const p = point.replace(/\\040/g, ' ');
    if ((dir === p || dir.startsWith(p.endsWith('/') ? p : p + '/')) && (!best || p.length > best.point.length)) {
      best = { point: p, type, options: (options ?? '').split(',') };
    }
  }
  return best;
}

export async function probeState(config: Config): Promise<Finding[]> {
  const dir = config.stateDir;
  const out: Finding[] = [];
  let existing = dir;
  while (!fs.existsSync(existing) && path.dirname(existing) !== existing) existing = path.dirname(existing);
  if (existing !== dir) {
    try {
      fs.accessSync(existing, fs.constants.W_OK);
    } catch {
      return [fail(AREA, `${dir} does not exist and ${existing} is not writable`, `create it: install -d -o ${config.user} -m 755 ${dir}`)];
    }
    out.push(ok(AREA, `${dir} does not exist yet; the daemon creates it at start`));
  } else {
    // Write, fsync the file and the directory, remove: what a queue commit does.
    const probe = path.join(dir, `.check-${process.pid}`);
    let fd: number | null = null;
    try {
      fd = fs.openSync(probe, 'w', 0o600);
      fs.writeSync(fd, Buffer.alloc(4096));
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fd = null;
      const dfd = fs.openSync(dir, 'r');
      try {
        fs.fsyncSync(dfd);
      } finally {
        fs.closeSync(dfd);
      }
      out.push(ok(AREA, `${dir} is writable and fsync works`));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const fix = e.code === 'EACCES' || e.code === 'EPERM' ? `run check as root or as ${config.user}, or fix the owner: chown -R ${config.user} ${dir}` : `check the filesystem of ${dir} (dmesg, df -h)`;
      return [fail(AREA, `cannot write and fsync in ${dir}: ${e.code ?? e.message}`, fix), ...(await probeQueue(dir))];
    } finally {
      if (fd !== null) fs.closeSync(fd);
      fs.rmSync(probe, { force: true });
    }
  }
  let st: fs.StatsFs | null = null;
  try {
    st = fs.statfsSync(existing);
  } catch {
    /* old kernel or odd fs: the mount table below still says something */
  }
  const mount = mountOf(fs.realpathSync(existing));
  const fsType = mount?.type ?? (st ? `0x${st.type.toString(16)}` : 'unknown');
  if (st?.type === TMPFS || st?.type === RAMFS || mount?.type === 'tmpfs' || mount?.type === 'ramfs') {
    out.push(warn(AREA, `${dir} is on ${fsType}: queued mail is lost at reboot or power loss`,
      `set state_dir to a directory on flash or disk (on OpenWrt e.g. /overlay/tidemail or a USB stick; /var is RAM there)`));
  } else if (st?.type === NFS || /^nfs/.test(mount?.type ?? '')) {
    out.push(warn(AREA, `${dir} is on NFS: SQLite locking and fsync are not reliable there`, 'put state_dir on a local filesystem'));
  } else if (mount && mount.options.some((o) => o === 'nobarrier' || o === 'barrier=0')) {
    out.push(warn(AREA, `${mount.point} is mounted with ${mount.options.find((o) => /barrier/.test(o))}: fsync may return before data is on disk`, `remount ${mount.point} without that option`));
  } else {
    out.push(ok(AREA, `filesystem ${fsType}${mount ? ` (mounted at ${mount.point})` : ''} keeps data across reboots`));
  }
  if (st) {
    const room = roomOf(st);
    const free = room.free;
    const mb = `${Math.floor(free / 1024 / 1024)} MiB free`;
    const minfree = reserveOf(config.queue.queueMinfree, config.smtp.maxMessageSize, room.size);
    if (free < minfree) {
      out.push(fail(AREA, `refusing new mail: ${mib(free)} free on ${existing}, queue_minfree ${mib(minfree)}`, `free space on ${mount?.point ?? existing}, or lower [queue] queue_minfree`));
      // The daemon's pickup waits below the reserve too (queue/maildrop-space.ts): sendmail's files stay.
      const waiting = existing === dir ? maildropMessages(dir) : 0;
      if (waiting) out.push(fail(AREA, describeWait({ since: 0, files: waiting, free, needed: minfree, reserve: minfree, why: 'reserve' }), `free space on ${mount?.point ?? existing}; the daemon picks them up by itself then`));
    } else if (free < NO_SPACE) out.push(fail(AREA, `${mb} on ${existing}: new mail will be refused (452)`, `free space on ${mount?.point ?? existing}`));
    else if (free < LOW_SPACE) out.push(warn(AREA, `only ${mb} on ${existing}`, `free space on ${mount?.point ?? existing}, or lower [smtp] max_message_size`));
  }
  if (existing === dir) out.push(...setAside(dir), ...(await probeQueue(dir)));
  return out;
}

/** Files sendmail left for the daemon to pick up (not the dot names: leftovers); 0 when we may not list them. */
function maildropMessages(dir: string): number {
  return maildropCounts(maildropDir(dir))?.waiting ?? 0;
}

/** Files the pickup refused and kept for the administrator (queue/maildrop-leftovers.ts): worth a look. */
function setAside(dir: string): Finding[] {
  // null: 1733 and not ours to list; the state probe says nothing more.
  const n = maildropCounts(maildropDir(dir))?.setAside;
  if (!n) return [];
  return [warn(AREA, `${n} refused file(s) set aside as .bad-* in ${maildropDir(dir)}`,
    `the daemon's log says why ("maildrop: refused"); look at them and remove them (they go by themselves after ${BAD_MAX_AGE_MS / 86_400_000} days)`)];
}

/**
 * The queue file itself, as the daemon checks it at start (queue/integrity.ts): read-only,
 * so a damaged file is reported and left exactly as it is.
 */
async function probeQueue(dir: string): Promise<Finding[]> {
  const file = path.join(dir, QUEUE_FILE);
  let db: Db | null = null;
  try {
    if (preflightQueue(dir) === 'new') return [ok(AREA, `no queue yet: the daemon creates ${file} at start`)];
    db = await Db.open(file, true);
    await quickCheck(db, file);
    const v = (await db.get<{ user_version: number }>('PRAGMA user_version'))?.user_version ?? 0;
    if (v > QUEUE_MIGRATIONS.length) {
      return [fail(AREA, `${file} was written by a newer tidemail (schema version ${v}, this build knows ${QUEUE_MIGRATIONS.length})`, 'run the newer tidemail again; this one refuses to start on it')];
    }
    const n = (await db.get<{ n: number }>('SELECT COUNT(*) AS n FROM messages'))?.n ?? 0;
    return [ok(AREA, `${file} passes quick_check, ${n} message(s)${v < QUEUE_MIGRATIONS.length ? `, schema ${v} (upgraded at the next start)` : ''}`)];
  } catch (err) {
    const e = isCorruption(err) ? damaged(file, (err as Error).message) : err;
    if (e instanceof StateError) return [fail(AREA, e.summary, e.fix || 'see the message above')];
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || /SQLITE_CANTOPEN|SQLITE_PERM/.test((err as Error).message)) return [skip(AREA, `cannot read ${file} as this user (${(err as Error).message}); run check as root to verify it`)];
    return [fail(AREA, `cannot read ${file}: ${(err as Error).message}`, `check the filesystem of ${dir} (dmesg)`)];
  } finally {
    await db?.close().catch(() => undefined);
  }
}
