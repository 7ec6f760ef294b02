// Small helpers shared by the benchmark modules: ports, process memory, external commands.
// Node built-ins only (and the tests' port picker).

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';

export { delay as sleep };

/** The tests' free-port picker (below the ephemeral range, so nothing takes it before the caller binds). */
export { freePort } from '../helpers/ports.js';

/**
 * Try once to open an SMTP session: resolves true when the server sends a 220 greeting.
 * Sends QUIT afterwards so the server sees a clean session.
 */
function probeSmtp(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    let buf = '';
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (ok) sock.end('QUIT\r\n');
      else sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    sock.on('data', (d: Buffer) => {
      buf += d.toString('latin1');
      const eol = buf.indexOf('\r\n');
      if (eol >= 0) finish(buf.startsWith('220'));
    });
    sock.on('error', () => finish(false));
    sock.on('close', () => finish(false));
  });
}

/**
 * Poll until host:port answers with an SMTP 220 greeting, or until timeoutMs has passed.
 * `abort` lets the caller stop waiting early (e.g. the process being waited on exited).
 */
export async function waitForSmtp(
  host: string,
  port: number,
  timeoutMs: number,
  abort?: () => boolean,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (abort?.()) return false;
    if (await probeSmtp(host, port, 2000)) return true;
    await delay(100);
  }
  return false;
}

/** Memory figures of one process, from /proc/<pid>/status, in KiB. */
export interface ProcMem {
  rssKiB: number; // VmRSS: resident set size now
  hwmKiB: number; // VmHWM: peak resident set size since start (or since the last reset)
}

/** Read VmRSS / VmHWM of a process; null when the process is gone or /proc is unavailable. */
export function readProcMem(pid: number): ProcMem | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return null;
  }
  const field = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) : NaN;
  };
  return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
}

/**
 * Reset a process's VmHWM to its current RSS (Linux >= 4.0: write "5" to clear_refs).
 * Needs the same uid or root; returns false when not possible.
 */
export function resetPeakRss(pid: number): boolean {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

/** All descendants of a process (children, grandchildren, ...), via /proc/<pid>/task/<tid>/children. */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  const walk = (p: number): void => {
    let tasks: string[];
    try {
      tasks = fs.readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let kids = '';
      try {
        kids = fs.readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.split(/\s+/).filter(Boolean).map(Number)) {
        out.push(k);
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

/** Find an executable in PATH plus the sbin directories Postfix installs into. */
export function which(cmd: string): string | null {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/local/sbin']);
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return null;
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  elapsedMs: number;
  timedOut: boolean;
}

/** Run a command to completion (no shell), collecting output; kill it after timeoutMs. */
export function runCommand(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    const started = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env, cwd: opts.cwd });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (timer) clearTimeout(timer);
      const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
      resolve({ code, signal, stdout, stderr, elapsedMs, timedOut });
    };
    child.on('error', (err) => {
      stderr += String(err);
      finish(-1, null);
    });
    child.on('close', finish);
  });
}

/** Milliseconds since an arbitrary origin, with sub-ms resolution. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** KiB -> "12.3 MB" (MiB, but written MB as the targets are). */
export function fmtMiB(kib: number): string {
  return Number.isFinite(kib) ? `${(kib / 1024).toFixed(1)} MB` : 'n/a';
}

/** Clock ticks per second for /proc/<pid>/stat times (USER_HZ; 100 on every Linux we target). */
const CLK_TCK = 100;

/**
 * CPU time (user + system) a process has used so far, in ms, all threads together; with `tid`,
 * only that thread (tid === pid is the main thread: for Node, the JavaScript thread).
 * Null when it is gone.
 */
export function cpuTimeMs(pid: number, tid?: number): number | null {
  let text: string;
  try {
    text = fs.readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) may contain spaces; fields after the closing ")" are fixed.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(f[11]); // field 14
  const stime = Number(f[12]); // field 15
  return Number.isFinite(utime + stime) ? ((utime + stime) * 1000) / CLK_TCK : null;
}

/**
 * Snapshot of CPU times for a set of processes; diff() gives the CPU ms used since, counting
 * processes that appeared in between in full (processes that exited in between are lost).
 * With mainThreadOnly, only each process's main thread is counted.
 */
export class CpuMeter {
  private readonly start = new Map<number, number>();

  constructor(
    private readonly pids: () => number[],
    private readonly mainThreadOnly = false,
  ) {
    for (const p of pids()) {
      const t = this.read(p);
      if (t !== null) this.start.set(p, t);
    }
  }

  private read(pid: number): number | null {
    return cpuTimeMs(pid, this.mainThreadOnly ? pid : undefined);
  }

  diff(): number {
    let sum = 0;
    for (const p of this.pids()) {
      const t = this.read(p);
      if (t !== null) sum += t - (this.start.get(p) ?? 0);
    }
    return sum;
  }
}

/**
 * Jiffies of the whole machine (all cores) from the first line of /proc/stat: `busy` = everything
 * but idle/iowait (so it includes irq, softirq - e.g. loopback TCP - and steal), `proc` = user +
 * nice + system only, i.e. time charged to processes.
 */
function machineJiffies(): { busy: number; proc: number; total: number } | null {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0); // user..steal (guest is inside user)
    const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
    return { busy: total - idle, proc: (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0), total };
  } catch {
    return null;
  }
}

/** Share of the whole machine's CPU capacity (0..1) used since construction. */
export class MachineMeter {
  private readonly start = machineJiffies();

  /** busy: all non-idle time; proc: time charged to processes (user + nice + system). */
  read(): { busy: number; proc: number } | null {
    const end = machineJiffies();
    if (!this.start || !end || end.total === this.start.total) return null;
    const total = end.total - this.start.total;
    return { busy: (end.busy - this.start.busy) / total, proc: (end.proc - this.start.proc) / total };
  }
}

/**
 * CPU ms used so far by this process plus its reaped children (from /proc/self/stat: utime,
 * stime, cutime, cstime). Diffed around a run it gives the load client's CPU: the Node generator
 * runs in this process, smtp-source is a child that has been waited for when the run ends.
 */
export function selfAndChildrenCpuMs(): number {
  try {
    const text = fs.readFileSync('/proc/self/stat', 'utf8');
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]); // fields 14-17
    return (ticks * 1000) / CLK_TCK;
  } catch {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }
}
