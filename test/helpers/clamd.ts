// A real ClamAV clamd (apt: clamav-daemon) as a child of the test. It cannot download the
// official signatures here, so its database directory holds only what the test writes: custom
// signature files (.hdb MD5 signatures, .ndb body signatures), which clamd loads in well under
// a second.

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { canConnect, freePort, waitFor } from './ports.js';
import { tmpDir, writeFile } from './tmp.js';

export interface Clamd {
  port: number;
  /** host:port */
  address: string;
  /** The unix socket (LocalSocket). */
  socket: string;
  startMs: number;
  log(): string;
  stop(): Promise<void>;
}

/** An .hdb line: clamd reports a file (or a decoded attachment) with this MD5 and size as `name`. */
export function hdbSignature(content: Buffer, name: string): string {
  return `${createHash('md5').update(content).digest('hex')}:${content.length}:${name}\n`;
}

export interface ClamdOptions {
  /** Signature files by name (e.g. `test.hdb`). */
  signatures: Record<string, string>;
  /** clamd.conf StreamMaxLength (default clamd's 25M). */
  streamMaxLength?: string;
}

export async function startClamd(opts: ClamdOptions): Promise<Clamd> {
  const dir = tmpDir('tidemail-clamd-');
  const db = path.join(dir, 'db');
  for (const [name, text] of Object.entries(opts.signatures)) writeFile(path.join(db, name), text);
  const port = await freePort();
  const socket = path.join(dir, 'clamd.sock');
  const logFile = path.join(dir, 'clamd.log');
  const conf = writeFile(
    path.join(dir, 'clamd.conf'),
    [
      `DatabaseDirectory ${db}`,
      `TCPSocket ${port}`,
      'TCPAddr 127.0.0.1',
      `LocalSocket ${socket}`,
      'Foreground yes',
      // clamd cannot log to a pipe (/dev/stderr); a file it can.
      `LogFile ${logFile}`,
      `PidFile ${path.join(dir, 'clamd.pid')}`,
      'Bytecode no',
      ...(opts.streamMaxLength ? [`StreamMaxLength ${opts.streamMaxLength}`] : []),
      '',
    ].join('\n'),
  );
  const started = Date.now();
  const proc: ChildProcess = spawn('clamd', ['-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const log = () => out + (fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '');
  let exited = false;
  const exit = new Promise<void>((r) => proc.on('exit', () => ((exited = true), r())));
  const kill = () => proc.kill('SIGKILL');
  process.on('exit', kill);
  try {
    await waitFor('clamd listening', async () => {
      if (exited) throw new Error(`clamd exited:\n${log()}`);
      return canConnect(port);
    }, 60_000, 50);
  } catch (err) {
    kill();
    throw err;
  }
  const startMs = Date.now() - started;
  return {
    port,
    address: `127.0.0.1:${port}`,
    socket,
    startMs,
    log,
    async stop() {
      process.off('exit', kill);
      if (!exited) {
        proc.kill('SIGTERM');
        const t = setTimeout(kill, 5000);
        await exit;
        clearTimeout(t);
      }
    },
  };
}
