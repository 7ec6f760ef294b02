// Small helpers shared by the benchmark modules: ports, process memory, external commands.
// Node built-ins only.

import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';

export { delay as sleep };

/** Ask the kernel for a free TCP port on 127.0.0.1 (there is a tiny race until the caller binds it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

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
