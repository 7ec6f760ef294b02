// Replacing a whole config dir (`setup`, `import-masqmail`) so that whoever reads it — the daemon
// at start or on SIGHUP, `tidemail config check` — sees the old configuration or the new one,
// never a mix (the old main file with its routes already deleted, say).
//
// The new dir is built beside the live one as <dir>.new-PID: hard links to what the live dir
// holds (users file, TLS and DKIM keys, rotated tokens: the same inodes, so secrets are not
// copied and keep their mode and owner), minus the old route files when replacing, plus the
// generated files. Then everything is fsync'd and the switch is
//   <dir>.new-PID → <dir>.ready-PID     (it is complete)
//   <dir>         → <dir>.backup-TIME   (the old config, moved as it was: the --force backup)
//   <dir>.ready-PID → <dir>
// Linux cannot exchange two directories with rename(2) alone (renameat2 is out of Node's reach),
// so between the last two renames — two system calls apart — there is no <dir>. A process killed
// exactly there leaves <dir>.ready-PID, and the next setup finishes the switch
// (finishInterruptedSwitch); anything else interrupted leaves the old dir live and untouched.

import fs from 'node:fs';
import { syncDirSync, syncFileSync } from '../durable-fs.js';
import path from 'node:path';
import { timestamp } from './writer.js';

export interface Staged {
  /** The live config dir, e.g. /etc/tidemail. */
  live: string;
  /** Where the new one is being built. */
  dir: string;
  /** Whether the live dir existed (and so is moved away at the switch). */
  hadLive: boolean;
}

/** The path inside the staged dir of `p`, a path inside the live dir (others are returned as they are). */
export function stagedPath(s: Staged, p: string): string {
  const rel = path.relative(s.live, p);
  if (rel.startsWith('..') || path.isAbsolute(rel)) return p;
  return path.join(s.dir, rel);
}

const asRoot = () => process.getuid?.() === 0;

/** Makes `to` a directory like `from` (mode, and owner when we are root). */
function likeDir(from: fs.Stats | null, to: string): void {
  fs.mkdirSync(to, { mode: 0o700 });
  if (from && asRoot()) fs.chownSync(to, from.uid, from.gid);
  fs.chmodSync(to, from ? from.mode & 0o7777 : 0o755);
}

/** Links the tree at `from` into `to` (a new dir); `skip(rel)` leaves entries out. */
function linkTree(from: string, to: string, skip: (rel: string) => boolean, rel = ''): void {
  for (const d of fs.readdirSync(from, { withFileTypes: true })) {
    const r = path.join(rel, d.name);
    if (skip(r)) continue;
    const src = path.join(from, d.name);
    const dst = path.join(to, d.name);
    if (d.isDirectory()) {
      likeDir(fs.lstatSync(src), dst);
      linkTree(src, dst, skip, r);
    } else if (d.isSymbolicLink()) {
      fs.symlinkSync(fs.readlinkSync(src), dst);
    } else if (d.isFile()) {
      try {
        fs.linkSync(src, dst);
      } catch (err) {
        // fs.protected_hardlinks (a file of another user, as non-root) or a bind mount: copy it,
        // mode and owner kept (COPYFILE_EXCL: never over something already there).
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EPERM' && code !== 'EXDEV') throw err;
        const st = fs.statSync(src);
        fs.copyFileSync(src, dst, fs.constants.COPYFILE_EXCL);
        if (asRoot()) fs.chownSync(dst, st.uid, st.gid);
        fs.chmodSync(dst, st.mode & 0o7777);
      }
    }
    // Sockets, fifos, devices: not configuration; left out.
  }
}

/** The staging dirs of `live` that earlier runs left behind, by kind. */
function leftovers(live: string): { kind: 'new' | 'ready' | 'old'; dir: string; pid: number }[] {
  const parent = path.dirname(live);
  const base = path.basename(live);
  const re = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(new|ready|old)-(\\d+)$`);
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return [];
  }
  return names.flatMap((n) => {
    const m = re.exec(n);
    return m ? [{ kind: m[1] as 'new' | 'ready' | 'old', dir: path.join(parent, n), pid: Number(m[2]) }] : [];
  });
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Cleans up after a setup that was killed: a complete new dir with no live dir (killed between
 * the two final renames) becomes the live dir; half-built and stale ones of dead processes are
 * removed. Returns what it did, for the user.
 */
export function finishInterruptedSwitch(live: string): string[] {
  const done: string[] = [];
  const found = leftovers(live).filter((l) => !alive(l.pid));
  const ready = found.filter((l) => l.kind === 'ready').sort((a, b) => fs.statSync(b.dir).mtimeMs - fs.statSync(a.dir).mtimeMs);
  if (!fs.existsSync(live) && ready[0]) {
    fs.renameSync(ready[0].dir, live);
    syncDirSync(path.dirname(live));
    done.push(`finished an interrupted switch: ${ready[0].dir} (complete) is now ${live}`);
  }
  for (const l of found) {
    if (!fs.existsSync(l.dir)) continue;
    fs.rmSync(l.dir, { recursive: true, force: true });
    done.push(`removed ${l.dir}, left by an interrupted run (pid ${l.pid})`);
  }
  return done;
}

/**
 * Starts the new config dir beside `live`, holding what `live` holds — without its route files
 * when `dropRoutes` (the new config is exactly what was generated, as before).
 */
export function stageConfigDir(live: string, opts: { dropRoutes: boolean }): Staged {
  const dir = `${live}.new-${process.pid}`;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(live), { recursive: true, mode: 0o755 });
  let st: fs.Stats | null = null;
  try {
    st = fs.statSync(live);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    likeDir(st, dir);
    if (st) linkTree(live, dir, (rel) => opts.dropRoutes && path.dirname(rel) === 'routes' && rel.endsWith('.toml'));
  } catch (err) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return { live, dir, hadLive: st !== null };
}

/**
 * fsyncs the new dir and makes it the live one. `backup`: keep the old dir as
 * <live>.backup-TIME (returned); otherwise the old dir (all of it linked into the new one) is
 * removed afterwards.
 */
export function commitConfigDir(s: Staged, opts: { backup: boolean }): string | null {
  syncTree(s.dir);
  const parent = path.dirname(s.live);
  const ready = `${s.live}.ready-${process.pid}`;
  fs.renameSync(s.dir, ready);
  syncDirSync(parent);
  let old: string | null = null;
  // A dir that appeared since staging began (another setup) is not ours to delete: keep it.
  const keep = opts.backup || !s.hadLive;
  if (fs.existsSync(s.live)) {
    old = keep ? backupName(s.live) : `${s.live}.old-${process.pid}`;
    try {
      fs.renameSync(s.live, old);
    } catch (err) {
      fs.renameSync(ready, s.dir); // back to "not complete", so that abandonStaged finds it
      throw err;
    }
  }
  try {
    fs.renameSync(ready, s.live);
  } catch (err) {
    // Put the old dir back rather than leave none.
    if (old) fs.renameSync(old, s.live);
    fs.renameSync(ready, s.dir);
    throw err;
  }
  syncDirSync(parent);
  if (old && !keep) {
    // Switched already: a failure here only leaves <dir>.old-PID for the next run to remove.
    try {
      fs.rmSync(old, { recursive: true, force: true });
    } catch {
      // see above
    }
    return null;
  }
  return old;
}

/**
 * A one-line account of a file-system error met while staging or switching (ENOSPC, EACCES,
 * EXDEV on an overlay that cannot rename a dir of its lower layer, …), saying that the live
 * config was left as it was; null for errors that are not the file system's.
 */
export function switchFailure(err: unknown, live: string): string | null {
  const e = err as NodeJS.ErrnoException;
  if (typeof e?.code !== 'string' || !e.syscall) return null;
  const hint = e.code === 'EXDEV' ? ' (an overlay filesystem that cannot rename this directory? write the files by hand, or keep the config on the upper layer)'
    : e.code === 'ENOSPC' ? ' (the disk is full)'
    : e.code === 'EBUSY' ? ` (is ${live} or a dir in it a mount point?)` : '';
  return `cannot write the new configuration: ${e.code} on ${e.path ?? live}${hint}\n  ${live} was left as it was; nothing was switched`;
}

/** Removes a staged dir that will not be used (an error before the switch). */
export function abandonStaged(s: Staged): void {
  fs.rmSync(s.dir, { recursive: true, force: true });
}

function backupName(live: string): string {
  let backup = `${live}.backup-${timestamp()}`;
  for (let i = 1; fs.existsSync(backup); i++) backup = `${live}.backup-${timestamp()}-${i}`;
  return backup;
}

function syncTree(dir: string): void {
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, d.name);
    if (d.isDirectory()) syncTree(p);
    else if (d.isFile()) syncFileSync(p);
  }
  syncDirSync(dir);
}

