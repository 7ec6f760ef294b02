// Start / stop the tidemail daemon as a child process for the benchmark.
//
// The daemon gets a private config and state dir under a temp dir. With no route files, every
// message for a remote domain simply stays queued: "accepted into the durable queue" is exactly
// what a 250 after DATA means here. Readiness = the port answering with a 220 greeting (polled for
// up to 20 s; the benchmark needs the listener anyway); a "daemon ready" log line is recorded.

import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { runCommand, sleep, waitForSmtp } from './common.js';

export interface Daemon {
  pid: number;
  port: number;
  /** the user written into the config ("root" or the fallback "nobody") */
  user: string;
  /** whether a log line containing "daemon ready" was seen */
  readyLogged(): boolean;
  /** true once the process has exited */
  exited(): boolean;
  /** exit code / signal, once exited */
  exitInfo(): string;
  /** the last lines the daemon wrote to stderr/stdout */
  logTail(lines?: number): string;
  /** SIGTERM, wait up to 10 s, then SIGKILL. Resolves with how it ended. */
  stop(): Promise<string>;
}

/**
 * The script to run: bin/tidemail.js, the package's launcher. dist/src/main.js only exports
 * main(argv) and does nothing when run directly, so `node dist/src/main.js daemon` would exit at
 * once; the launcher imports it and calls main(process.argv). Null until the daemon is built.
 */
export function daemonEntry(repoRoot: string): string | null {
  const main = path.join(repoRoot, 'dist', 'src', 'main.js');
  const bin = path.join(repoRoot, 'bin', 'tidemail.js');
  if (!fs.existsSync(main)) return null;
  return fs.existsSync(bin) ? bin : main;
}

/**
 * Node options in the launcher's shebang, e.g. "#!/usr/bin/env -S node --max-semi-space-size=2"
 * -> ["--max-semi-space-size=2"]. The bench starts the launcher with process.execPath (the same
 * node that runs the bench), which ignores the shebang, so these are passed explicitly: the daemon
 * then runs with the options it is deployed with.
 */
export function shebangNodeArgs(script: string): string[] {
  let first: string;
  try {
    first = fs.readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return [];
  }
  if (!first.startsWith('#!')) return [];
  const words = first.slice(2).trim().split(/\s+/);
  const i = words.findIndex((w) => path.basename(w) === 'node' || path.basename(w) === 'nodejs');
  return i >= 0 ? words.slice(i + 1) : [];
}

/** Variables the launcher's shebang sets before node (`env -S MALLOC_ARENA_MAX=2 node …`). */
export function shebangEnv(script: string): Record<string, string> {
  let first = '';
  try {
    first = fs.readFileSync(script, 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return {};
  }
  if (!first.startsWith('#!')) return {};
  const out: Record<string, string> = {};
  for (const w of first.slice(2).trim().split(/\s+/)) {
    if (path.basename(w) === 'node' || path.basename(w) === 'nodejs') break;
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(w);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/**
 * Extra node command-line options for the daemon, from BENCH_DAEMON_NODE_ARGS (space-separated),
 * to try V8 settings (e.g. "--max-semi-space-size=2") without touching the package.
 */
export function daemonNodeArgs(): string[] {
  return (process.env.BENCH_DAEMON_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
}

function configToml(stateDir: string, port: number, user: string): string {
  return [
    'hostname = "bench.test"',
    `state_dir = "${stateDir}"`,
    `user = "${user}"`,
    '[smtp]',
    `listen = ["127.0.0.1:${port}"]`,
    'trusted_networks = ["127.0.0.0/8"]',
    'max_message_size = "100M"',
    '',
  ].join('\n');
}

/** Look up a user's uid/gid in /etc/passwd (no native getpwnam in Node). */
function passwdEntry(user: string): { uid: number; gid: number } | null {
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === user && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]) };
    }
  } catch {
    // no passwd file
  }
  return null;
}

/** One attempt: write the config, spawn, wait until ready or exited. */
async function launch(
  entry: string,
  dir: string,
  port: number,
  user: string,
  readyTimeoutMs: number,
  nodeArgs: string[],
): Promise<Daemon> {
  const stateDir = path.join(dir, 'state');
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o755 });
  if (user !== 'root' && process.getuid?.() === 0) {
    // The daemon drops to `user`: let it write its state dir and traverse the temp dir.
    fs.chmodSync(dir, 0o755);
    const pw = passwdEntry(user);
    if (pw) fs.chownSync(stateDir, pw.uid, pw.gid);
  }
  const configPath = path.join(dir, 'tidemail.toml');
  fs.writeFileSync(configPath, configToml(stateDir, port, user));

  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, entry, 'daemon', '--config', configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...shebangEnv(entry), ...process.env, TIDEMAIL_CONFIG: configPath },
    cwd: dir,
  });
  // Keep the last 300 log lines; the full log also goes to DIR/daemon.log for post-mortems.
  const logFile = fs.createWriteStream(path.join(dir, 'daemon.log'), { flags: 'a' });
  const lines: string[] = [];
  let partial = '';
  let ready = false;
  const onOutput = (d: Buffer): void => {
    logFile.write(d);
    partial += d.toString('utf8');
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const l of parts) {
      if (l.includes('daemon ready')) ready = true;
      lines.push(l);
      if (lines.length > 300) lines.shift();
    }
  };
  child.stdout?.on('data', onOutput);
  child.stderr?.on('data', onOutput);
  let exitInfo = '';
  const exitedP = once(child, 'exit').then(([code, signal]) => {
    exitInfo = signal ? `signal ${signal}` : `exit code ${code}`;
    logFile.end();
  });
  const exited = (): boolean => exitInfo !== '';

  const daemon: Daemon = {
    pid: child.pid ?? 0,
    port,
    user,
    readyLogged: () => ready,
    exited,
    exitInfo: () => exitInfo,
    logTail: (n = 20) => lines.concat(partial ? [partial] : []).slice(-n).join('\n'),
    stop: async () => {
      if (!exited()) {
        child.kill('SIGTERM');
        await Promise.race([exitedP, sleep(10_000)]);
        if (!exited()) {
          child.kill('SIGKILL');
          await exitedP;
          return `did not exit within 10 s of SIGTERM; killed (${exitInfo})`;
        }
      }
      return exitInfo;
    },
  };

  // The bench needs the listener, so readiness is decided by the port greeting with 220 (polled
  // until readyTimeoutMs); the "daemon ready" log line is only noted. Stop early if it exits.
  const portOk = await waitForSmtp('127.0.0.1', port, readyTimeoutMs, exited);
  if (!portOk || exited()) {
    if (!exited()) await daemon.stop();
    const why = exited()
      ? `exited (${exitInfo}) before answering on 127.0.0.1:${port}`
      : `did not answer on 127.0.0.1:${port} within ${readyTimeoutMs} ms`;
    throw new Error(`tidemail ${why}; "daemon ready" ${ready ? 'was' : 'was not'} logged; log:\n${daemon.logTail(30)}`);
  }
  return daemon;
}

/**
 * Start the daemon with a fresh temp dir. Tries user = "root" first; if that attempt dies before
 * becoming ready (e.g. the daemon refuses to run as root), retries once with user = "nobody".
 */
export async function startTidemail(
  repoRoot: string,
  port: number,
  opts: { readyTimeoutMs?: number; tmpParent?: string; nodeArgs?: string[] } = {},
): Promise<{ daemon: Daemon; dir: string; notes: string[] }> {
  const entry = daemonEntry(repoRoot);
  if (!entry) throw new Error('dist/src/main.js not found (build the daemon first)');
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;
  // Node options go before the script: the launcher's shebang options, then the extra ones
  // (V8 flags etc.; default BENCH_DAEMON_NODE_ARGS). A later flag overrides an earlier one.
  const nodeArgs = [...shebangNodeArgs(entry), ...(opts.nodeArgs ?? daemonNodeArgs())];
  const notes: string[] = [];
  const dir = fs.mkdtempSync(path.join(opts.tmpParent ?? os.tmpdir(), 'tidemail-bench-'));
  try {
    return { daemon: await launch(entry, dir, port, 'root', readyTimeoutMs, nodeArgs), dir, notes };
  } catch (e) {
    if (process.getuid?.() !== 0) throw e;
    // Keep the reason short: the first log line after the header (e.g. "refusing to run as root").
    const [head, first] = (e as Error).message.split('\n');
    notes.push(`with user = "root" the daemon ${head!.replace(/^tidemail /, '').replace(/;.*$/, '')}: ` +
      `${(first ?? '').trim()}; ran it as user = "nobody" instead`);
  }
  fs.rmSync(path.join(dir, 'state'), { recursive: true, force: true });
  return { daemon: await launch(entry, dir, port, 'nobody', readyTimeoutMs, nodeArgs), dir, notes };
}

/**
 * Messages in a (stopped) daemon's queue, from `tidemail status --config FILE`
 * ("queue:   N message(s), ..."). Null when the command fails or the format is not recognised.
 */
export async function tidemailQueueCount(repoRoot: string, configPath: string): Promise<number | null> {
  const entry = daemonEntry(repoRoot);
  if (!entry) return null;
  const r = await runCommand(process.execPath, [entry, 'status', '--config', configPath], { timeoutMs: 30_000 });
  const m = /^queue:\s+(\d+) message/m.exec(r.stdout);
  return m ? Number(m[1]) : null;
}
