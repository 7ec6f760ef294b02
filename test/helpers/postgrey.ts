// A real postgrey (apt) policy server on a loopback port, as a child of the test.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { canConnect, freePort, waitFor } from './ports.js';
import { isRoot, tmpDir } from './tmp.js';

export interface Postgrey {
  port: number;
  address: string;
  log(): string;
  stop(): void;
}

/** postgrey greylisting with a `delaySeconds` delay; no auto-whitelisting, so every triplet waits. */
export async function startPostgrey(delaySeconds = 2, extra: string[] = []): Promise<Postgrey> {
  const port = await freePort();
  const dbdir = tmpDir('tidemail-postgrey-');
  const args = [`--inet=127.0.0.1:${port}`, `--dbdir=${dbdir}`, `--delay=${delaySeconds}`, '--auto-whitelist-clients=0', ...extra];
  if (isRoot()) {
    // postgrey refuses to keep root; its db dir must belong to the user it becomes.
    const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    fs.chownSync(dbdir, uid, gid);
    const group = execFileSync('id', ['-gn', 'nobody'], { encoding: 'utf8' }).trim();
    args.push('--user=nobody', `--group=${group}`);
  }
  const proc: ChildProcess = spawn('postgrey', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const kill = () => proc.kill('SIGKILL');
  process.on('exit', kill);
  await waitFor('postgrey listening', () =>
    canConnect(port), 10_000, 100);
  return {
    port,
    address: `127.0.0.1:${port}`,
    log: () => out,
    stop: () => {
      process.off('exit', kill);
      kill();
    },
  };
}
