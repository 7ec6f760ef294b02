// Before the daemon gives up root: can the run user still reach our code and state? After the
// drop it loads modules lazily (schedules, fetch, the queue's event log, libraries' own lazy
// requires), so a clone in /root or a 0700 `mktemp -d` would start, then fail at the first
// delivery with "Cannot find module". Like Postfix, we refuse at start with what to do instead.
//
// The probe really opens the files with the run user's effective uid/gids (seteuid, then back to
// root), so the kernel decides — modes, supplementary groups and ACLs alike.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lookupUser, type SystemUser } from './local/users.js';
import { StateError, STATE_EXIT } from './queue/state-error.js';

/** dist/src, where this module and every module loaded later lives. */
const CODE_DIR = path.dirname(fileURLToPath(import.meta.url));
const PACKAGE_ROOT = path.resolve(CODE_DIR, '..', '..');

export class UnreachableError extends StateError {
  override name = 'UnreachableError';
}

/** The run user's groups as dropPrivileges sets them: its own only (no `mail`). */
export function runGroups(u: SystemUser): number[] {
  return [u.gid];
}

/** Runs `fn` with the effective ids of `u`; root's are back before it returns. Only as root. */
function asUser<T>(u: SystemUser, fn: () => T): T {
  const groups = process.getgroups!();
  process.setgroups!(runGroups(u));
  process.setegid!(u.gid);
  process.seteuid!(u.uid);
  try {
    return fn();
  } finally {
    process.seteuid!(0);
    process.setegid!(0);
    process.setgroups!(groups);
  }
}

export interface Blocked {
  /** What the user could not open. */
  path: string;
  /** The directory (or file) that stops it, with its mode and owner as root sees them. */
  at: string;
  mode: string;
  owner: string;
  code: string;
}

/**
 * The first of `paths` that `u` cannot open (files: read; directories: list), or null.
 * Paths that do not exist are skipped (root creates them later, or they are optional).
 */
export function firstUnreadable(u: SystemUser, paths: string[]): Blocked | null {
  for (const p of paths) {
    if (!fs.existsSync(p)) continue;
    const code = asUser(u, () => {
      try {
        if (fs.statSync(p).isDirectory()) fs.readdirSync(p);
        else fs.closeSync(fs.openSync(p, 'r'));
        return null;
      } catch (err) {
        return (err as NodeJS.ErrnoException).code ?? 'error';
      }
    });
    if (code) return { path: p, code, ...culprit(u, p) };
  }
  return null;
}

/** The outermost component of `p` the user cannot pass (no search permission), else `p` itself. */
function culprit(u: SystemUser, p: string): { at: string; mode: string; owner: string } {
  const parts = path.resolve(p).split(path.sep).filter(Boolean);
  let at = p;
  for (let i = 1; i <= parts.length; i++) {
    const next = path.sep + parts.slice(0, i).join(path.sep);
    const ok = asUser(u, () => {
      try {
        fs.statSync(next);
        return true;
      } catch {
        return false;
      }
    });
    if (!ok) {
      at = path.dirname(next);
      break;
    }
  }
  const st = fs.statSync(at);
  return { at, mode: (st.mode & 0o7777).toString(8).padStart(4, '0'), owner: lookupUser(st.uid)?.name ?? `uid ${st.uid}` };
}

/** Our own code and every dependency's package dir as Node will find them (node_modules upwards). */
export function codePaths(root = PACKAGE_ROOT): string[] {
  const out = [path.join(root, 'dist', 'src'), path.join(root, 'dist', 'src', 'daemon.js')];
  // The bundle the launcher runs when it is there (packaging/bundle.mjs); its chunks load lazily too.
  const bundle = path.join(root, 'dist', 'bundle');
  if (fs.existsSync(path.join(bundle, 'main.js'))) out.push(bundle, path.join(bundle, 'main.js'));
  let deps: string[] = [];
  try {
    deps = Object.keys((JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {});
  } catch {
    /* no package.json next to the code: nothing more to check */
  }
  for (const dep of deps) {
    for (let dir = root; ; dir = path.dirname(dir)) {
      const pj = path.join(dir, 'node_modules', dep, 'package.json');
      if (fs.existsSync(pj)) {
        out.push(path.dirname(pj), pj);
        break;
      }
      if (path.dirname(dir) === dir) break;
    }
  }
  return out;
}

/**
 * Throws an UnreachableError (exit 77, one paragraph, no stack trace) when `u` — the user the
 * daemon is about to become — cannot read the code or reach the state dir.
 */
export function checkReachable(u: SystemUser, stateDir: string, configFile: string | null): void {
  const where = configFile ? ` in ${configFile}` : '';
  const code = firstUnreadable(u, codePaths());
  if (code) {
    const summary = `tidemail runs as user "${u.name}" after start, but "${u.name}" cannot read ${code.path} (${code.code}: ${describe(code)})`;
    const fix = `install the package (npm install -g tidemail, or the .deb/.ipk) so its code is readable by every user, ` +
      `or move this copy out of ${code.at} (e.g. to /opt/tidemail), ` +
      `or let the user pass: chmod o+x ${code.at}, ` +
      `or set user = "NAME"${where} to a user who can read ${PACKAGE_ROOT}`;
    throw new UnreachableError(`${summary}; fix: ${fix}`, STATE_EXIT.NOPERM, { summary, fix });
  }
  const state = firstUnreadable(u, [stateDir]);
  if (state) {
    const summary = `tidemail runs as user "${u.name}" after start, but "${u.name}" cannot reach its state dir ${stateDir} (${state.code}: ${describe(state)})`;
    const fix = `set state_dir${where} to a directory outside ${state.at} (the default is /var/lib/tidemail), or let the user pass: chmod o+x ${state.at}`;
    throw new UnreachableError(`${summary}; fix: ${fix}`, STATE_EXIT.NOPERM, { summary, fix });
  }
}

function describe(b: Blocked): string {
  return b.at === b.path ? `mode ${b.mode}, owner ${b.owner}` : `${b.at} is mode ${b.mode}, owner ${b.owner}`;
}
