// A real SpamAssassin spamd (apt: spamd + spamassassin) on a loopback port and a unix socket, as
// a child of the test: local tests only (-L, no DNS or network rules), no per-user config, one
// child process.
// It uses the rules the package ships in /usr/share/spamassassin (sa-update never ran here).

import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { canConnect, freePort, waitFor } from './ports.js';
import { isRoot, tmpDir } from './tmp.js';

export interface Spamd {
  port: number;
  /** host:port */
  address: string;
  /** The same spamd on a unix socket. */
  socket: string;
  /** Milliseconds from spawn to accepting connections. */
  startMs: number;
  log(): string;
  stop(): Promise<void>;
}

export async function startSpamd(): Promise<Spamd> {
  const port = await freePort();
  const dir = tmpDir('tidemail-spamd-');
  const socket = path.join(dir, 'spamd.sock');
  const args = [
    `--listen=127.0.0.1:${port}`, `--listen=${socket}`, '--local', '--nouser-config', '--max-children=1', '--min-children=1',
    '--syslog=stderr', `--pidfile=${path.join(dir, 'spamd.pid')}`,
  ];
  // As root spamd wants a user to become; without -u it would pick nobody with a warning.
  if (isRoot()) args.push('--username=nobody');
  const started = Date.now();
  // Its own process group: spamd forks children, and a test must not leave them behind.
  const proc: ChildProcess = spawn('spamd', args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited = false;
  const exit = new Promise<void>((r) => proc.on('exit', () => ((exited = true), r())));
  const killGroup = () => {
    try {
      process.kill(-proc.pid!, 'SIGKILL');
    } catch {
      /* already gone */
    }
  };
  process.on('exit', killGroup);
  try {
    await waitFor('spamd listening', async () => {
      if (exited) throw new Error(`spamd exited:\n${out}`);
      return canConnect(port);
    }, 60_000, 100);
  } catch (err) {
    killGroup();
    throw err;
  }
  const startMs = Date.now() - started;
  return {
    port,
    address: `127.0.0.1:${port}`,
    socket,
    startMs,
    log: () => out,
    async stop() {
      process.off('exit', killGroup);
      if (!exited) {
        try {
          process.kill(-proc.pid!, 'SIGTERM');
        } catch {
          /* gone */
        }
        const t = setTimeout(killGroup, 5000);
        await exit;
        clearTimeout(t);
      }
      killGroup(); // children that outlived their parent
    },
  };
}
