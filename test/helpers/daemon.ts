// Runs the real daemon and CLI as processes against a temp config dir.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { codeRoot } from './code-root.js';
import { freePort, waitFor } from './ports.js';
import { tmpDir, writeFile } from './tmp.js';

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** What daemons and CLIs run from: the repo, or a copy the run user can read (code-root.ts). */
export const CODE = codeRoot(REPO);
export const BIN = path.join(CODE, 'bin', 'tidemail.js');

export interface TestSite {
  dir: string;
  configPath: string;
  stateDir: string;
  port: number;
  /** Writes routes/NAME.toml. */
  route(name: string, toml: string): void;
}

/** A config dir with tidemail.toml listening on a free loopback port. */
export async function makeSite(extraToml = '', opts: { port?: number; smtpToml?: string; stateDir?: string } = {}): Promise<TestSite> {
  const dir = tmpDir();
  const port = opts.port ?? (await freePort());
  const stateDir = opts.stateDir ?? path.join(dir, 'state');
  const configPath = path.join(dir, 'tidemail.toml');
  writeFile(
    configPath,
    `hostname = "tidemail.test"
state_dir = "${stateDir}"
user = "nobody"
${extraToml}
[smtp]
listen = ["127.0.0.1:${port}"]
trusted_networks = ["127.0.0.0/8", "::1/128"]
${opts.smtpToml ?? ''}
`,
  );
  return { dir, configPath, stateDir, port, route: (name, toml) => void writeFile(path.join(dir, 'routes', `${name}.toml`), toml) };
}

// Daemons must not outlive the test file, whatever way it ends.
const children = new Set<ChildProcess>();
const killChildren = () => children.forEach((c) => c.kill('SIGKILL'));
process.on('exit', killChildren);
process.on('SIGTERM', () => {
  killChildren();
  process.exit(143);
});

export interface RunningDaemon {
  proc: ChildProcess;
  site: TestSite;
  logs(): string;
  waitForLog(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  stop(): Promise<number | null>;
  kill9(): Promise<void>;
}

export async function startDaemon(site: TestSite, env: NodeJS.ProcessEnv = {}, args: string[] = []): Promise<RunningDaemon> {
  // The launcher's shebang settings (bin/tidemail.js), which spawning node directly bypasses.
  const proc = spawn(process.execPath, ['--max-semi-space-size=2', BIN, 'daemon', '--config', site.configPath, ...args], {
    env: { MALLOC_ARENA_MAX: '2', ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  proc.on('exit', () => children.delete(proc));
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited: number | null | undefined;
  const exitP = new Promise<number | null>((r) => proc.on('exit', (code) => { exited = code; r(code); }));
  const d: RunningDaemon = {
    proc,
    site,
    logs: () => out,
    waitForLog: (re, timeoutMs = 10_000) => waitFor(`log ${re}`, () => re.exec(out), timeoutMs),
    stop: async () => {
      if (exited === undefined) proc.kill('SIGTERM');
      return exitP;
    },
    kill9: async () => {
      if (exited === undefined) proc.kill('SIGKILL');
      await exitP;
    },
  };
  try {
    await waitFor('daemon ready', () => /daemon ready/.test(out) || exited !== undefined, 15_000);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`daemon did not start: ${(err as Error).message}\n${out}`);
  }
  if (exited !== undefined) throw new Error(`daemon exited with ${exited}:\n${out}`);
  return d;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI. `argv0` runs it under another name (sendmail, mailq, …) through a symlink,
 * the way the package installs it.
 */
export function runCli(
  args: string[],
  opts: { input?: string | Buffer; argv0?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; uid?: number; gid?: number } = {},
): Promise<CliResult> {
  let bin = BIN;
  if (opts.argv0) {
    const linkDir = path.join(CODE, 'dist', 'test-bin');
    fs.mkdirSync(linkDir, { recursive: true });
    bin = path.join(linkDir, opts.argv0);
    try {
      fs.symlinkSync(BIN, bin);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // made by a test file beside us
    }
  }
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'], uid: opts.uid, gid: opts.gid });
    let stdout = '';
    let stderr = '';
    proc.stdout.on('data', (d) => (stdout += d));
    proc.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${opts.argv0 ?? 'tidemail'} ${args.join(' ')} timed out\n${stderr}`));
    }, opts.timeoutMs ?? 30_000);
    proc.on('error', reject);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    proc.stdin.on('error', () => undefined);
    proc.stdin.end(opts.input ?? '');
  });
}

/**
 * mailq's output once `ready(output)` holds. The daemon logs a result ("deferred", "bounced")
 * before the queue has committed it, so a mailq run right after the log line may be a moment
 * behind it (under load, the commit's fsync is most of that moment).
 */
export async function mailqWhen(configPath: string, what: string, ready: (output: string) => boolean, timeoutMs = 10_000): Promise<string> {
  let last = '';
  try {
    const got = await waitFor(`mailq to show ${what}`, async () => {
      last = (await runCli(['mailq', '--config', configPath])).stdout;
      return ready(last) ? { output: last } : null;
    }, timeoutMs, 200);
    return got.output;
  } catch (err) {
    throw new Error(`${(err as Error).message}; it said:\n${last}`);
  }
}
