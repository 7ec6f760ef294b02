// A smarthost in a network namespace (smarthost-proc.js run by `ip netns exec`), as seen from
// the tests: connections and message tags counted, stalls reported.

import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { REPO } from './daemon.js';

export interface FarSide {
  proc: ChildProcess;
  connections: number;
  /** X-Tag of every message received, in order (a duplicate shows twice). */
  tags: string[];
  /** Replies withheld on purpose (--stall-mail / --stall-data). */
  stalls: string[];
  stop(): void;
}

export function startFarSide(ns: string, ip: string, port: number, args: string[] = []): Promise<FarSide> {
  const script = path.join(REPO, 'dist', 'test', 'helpers', 'smarthost-proc.js');
  const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, script, ip, String(port), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const far: FarSide = { proc, connections: 0, tags: [], stalls: [], stop: () => void proc.kill('SIGKILL') }; // a half-dead session would keep a polite close waiting
  let buf = '';
  return new Promise((resolve, reject) => {
    proc.on('exit', (code) => reject(new Error(`far-side smarthost exited with ${code}`)));
    proc.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)) as { event: string; tag?: string; what?: string };
        buf = buf.slice(nl + 1);
        if (ev.event === 'listening') resolve(far);
        if (ev.event === 'connection') far.connections++;
        if (ev.event === 'message' && ev.tag) far.tags.push(ev.tag);
        if (ev.event === 'stalled') far.stalls.push(ev.what ?? '?');
      }
    });
  });
}
