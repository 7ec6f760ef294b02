// Probe: every listener (listen, submission, smtps) can be bound. With the daemon running the
// ports are its own, which is the good case; otherwise we bind each one for a moment.

import fs from 'node:fs';
import net from 'node:net';
import type { Config, ListenAddress } from '../config/schema.js';
import { fail, ok, warn, type Finding } from './finding.js';

const AREA = 'ports';

/**
 * The program listening on TCP `port`, as "exim4 (pid 812)", from /proc (Linux). Null when we
 * cannot tell: not Linux, or the holder is another user's process and we are not root.
 */
export function whoHolds(port: number): string | null {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is HEXADDR:HEXPORT; state 0A is LISTEN; field 9 is the socket inode.
      if (f.length > 9 && f[3] === '0A' && parseInt(f[1]!.split(':').pop()!, 16) === port && f[9] !== '0') inodes.add(f[9]!);
    }
  }
  if (!inodes.size) return null;
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return null;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or not ours to look at
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(target);
      if (m && inodes.has(m[1]!)) {
        let comm = '?';
        try {
          comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
        } catch {
          /* exited meanwhile */
        }
        return `${comm} (pid ${pid})`;
      }
    }
  }
  return null;
}

/** What a failed bind means for the user: the problem, the fix, and the sysexits code. */
export interface BindProblem {
  problem: string;
  fix: string;
  /** fail: the daemon cannot start; warn: only this check cannot tell (not root). */
  severity: 'fail' | 'warn';
  exitCode: number;
}

/** `kind` is the [smtp] key (listen, submission, smtps); shared by `tidemail check` and the daemon. */
export function describeBindError(kind: string, l: ListenAddress, err: NodeJS.ErrnoException, runUser: string, asDaemon: boolean): BindProblem {
  const name = `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
  const root = process.getuid?.() === 0;
  if (err.code === 'EADDRINUSE') {
    const holder = whoHolds(l.port);
    return {
      problem: `${kind} ${name}: already in use by ${holder ?? 'another program'}`,
      fix: `${holder ? '' : `see who: ss -ltnp 'sport = :${l.port}' — `}stop it (another MTA? a tidemail daemon already running?) or change [smtp] ${kind}`,
      severity: 'fail',
      // The holder may go away (the old daemon still stopping): EX_TEMPFAIL, a supervisor retries.
      exitCode: 75,
    };
  }
  if (err.code === 'EACCES' && !root && l.port < 1024) {
    return asDaemon
      ? { problem: `${kind} ${name}: a port below 1024 needs root`, fix: `start the daemon as root (it drops to user "${runUser}" after binding), or use a port of 1024 or above in [smtp] ${kind}`, severity: 'fail', exitCode: 77 }
      : { problem: `${kind} ${name}: a port below 1024 needs root; not tested as this user`, fix: `start the daemon as root (it drops to user "${runUser}" after binding), or run this check as root`, severity: 'warn', exitCode: 77 };
  }
  if (err.code === 'EACCES' || err.code === 'EPERM') {
    return { problem: `${kind} ${name}: not allowed to bind (${err.code})`, fix: `a security policy (SELinux, AppArmor, a container) forbids it; allow it or change [smtp] ${kind}`, severity: 'fail', exitCode: 77 };
  }
  if (err.code === 'EADDRNOTAVAIL') {
    return {
      problem: `${kind} ${name}: ${l.host} is not an address of this machine`,
      fix: 'use one of the addresses `ip -br addr` shows, or 0.0.0.0 / [::]; at boot, start tidemail after the network is up',
      severity: 'fail',
      exitCode: 75, // an interface that is not up yet may bring it
    };
  }
  // A host name in listen that does not resolve (a typo, or DNS not up yet): the config's to fix.
  if (err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN') {
    return { problem: `${kind} ${name}: the host name does not resolve (${err.code})`, fix: `write an address in [smtp] ${kind} (e.g. "127.0.0.1:25", "0.0.0.0:25" or "[::]:25"): a name needs DNS before the daemon can start`, severity: 'fail', exitCode: 78 };
  }
  return { problem: `${kind} ${name}: cannot bind: ${err.code ?? err.message}`, fix: `check [smtp] ${kind}`, severity: 'fail', exitCode: 71 };
}

/** The daemon could not bind a listener; main.ts prints the message and exits with exitCode. */
export class ListenError extends Error {
  override name = 'ListenError';
  constructor(readonly problem: BindProblem) {
    super(`${problem.problem}\n  fix: ${problem.fix}`);
  }
  get exitCode(): number {
    return this.problem.exitCode;
  }
}

function tryBind(l: ListenAddress): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', (err) => resolve(err as NodeJS.ErrnoException));
    srv.listen({ host: l.host, port: l.port, exclusive: true }, () => srv.close(() => resolve(null)));
  });
}

export async function probePorts(config: Config, daemonPid: number | null): Promise<Finding[]> {
  const all: [string, ListenAddress][] = [
    ...config.smtp.listen.map((l) => ['listen', l] as [string, ListenAddress]),
    ...config.smtp.submission.map((l) => ['submission', l] as [string, ListenAddress]),
    ...config.smtp.smtps.map((l) => ['smtps', l] as [string, ListenAddress]),
  ];
  const out: Finding[] = [];
  for (const [kind, l] of all) {
    const name = `${l.host.includes(':') ? `[${l.host}]` : l.host}:${l.port}`;
    if (daemonPid !== null) {
      out.push(ok(AREA, `${kind} ${name}: held by the running daemon (pid ${daemonPid})`));
      continue;
    }
    const err = await tryBind(l);
    if (!err) {
      out.push(ok(AREA, `${kind} ${name}: can be bound`));
      continue;
    }
    const p = describeBindError(kind, l, err, config.user, false);
    out.push(p.severity === 'warn' ? warn(AREA, p.problem, p.fix) : fail(AREA, p.problem, p.fix));
  }
  return out;
}
