// Link-flap benchmark (link-flap.ts): the far end of the link — one smarthost process per subject
// in the network namespace, and the nft counters of the SYNs sent towards it and arriving there.

import { spawn, type ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { VethNamespace } from '../helpers/netns.js';

const HERE = path.dirname(fileURLToPath(import.meta.url)); // dist/test/bench
export const SMARTHOST_PROC = path.join(HERE, '..', 'helpers', 'smarthost-proc.js');

export interface FarSide {
  port: number;
  proc: ChildProcess;
  /** X-Tag -> arrival times (ms since the bench's t0) */
  arrivals: Map<string, number[]>;
  stop(): void;
}

export function startFarSide(v: VethNamespace, port: number, clock: () => number): Promise<FarSide> {
  const proc = spawn('ip', ['netns', 'exec', v.ns, process.execPath, SMARTHOST_PROC, v.farIp, String(port)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const far: FarSide = { port, proc, arrivals: new Map(), stop: () => void proc.kill('SIGKILL') };
  let buf = '';
  let err = '';
  proc.stderr!.on('data', (d) => (err = (err + d).slice(-2000)));
  return new Promise((resolve, reject) => {
    proc.on('exit', (code) => reject(new Error(`far-side smarthost on port ${port} exited with ${code}: ${err.trim()}`)));
    proc.stdout!.on('data', (d) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const ev = JSON.parse(buf.slice(0, nl)) as { event: string; tag?: string | null };
        buf = buf.slice(nl + 1);
        if (ev.event === 'listening') resolve(far);
        if (ev.event === 'message' && ev.tag) far.arrivals.set(ev.tag, [...(far.arrivals.get(ev.tag) ?? []), clock()]);
      }
    });
  });
}

/**
 * nft counters of TCP SYNs (no ACK) to each far port: `out` in our namespace (oifname HOST_IF,
 * seen even while the carrier is down), `in` in the far namespace (what arrives, before the loss
 * rule drops anything). Removed by remove().
 */
export class SynCounters {
  private readonly table: string;

  constructor(
    private readonly v: VethNamespace,
    private readonly ports: number[],
  ) {
    this.table = `tmflap${process.pid}`;
    const syn = ['tcp', 'flags', '&', '(syn|ack)', '==', 'syn'];
    this.remove();
    this.nft(false, 'add', 'table', 'inet', this.table);
    this.nft(false, 'add', 'chain', 'inet', this.table, 'out', '{ type filter hook output priority -10; }');
    this.nft(true, 'add', 'table', 'inet', this.table);
    this.nft(true, 'add', 'chain', 'inet', this.table, 'in', '{ type filter hook input priority -10; }');
    for (const p of ports) {
      this.nft(false, 'add', 'counter', 'inet', this.table, `out${p}`);
      this.nft(false, 'add', 'rule', 'inet', this.table, 'out', 'oifname', v.hostIf, ...syn, 'tcp', 'dport', String(p), 'counter', 'name', `out${p}`);
      this.nft(true, 'add', 'counter', 'inet', this.table, `in${p}`);
      this.nft(true, 'add', 'rule', 'inet', this.table, 'in', 'iifname', v.nsIf, ...syn, 'tcp', 'dport', String(p), 'counter', 'name', `in${p}`);
    }
  }

  private nft(inNs: boolean, ...args: string[]): string {
    const cmd = inNs ? ['netns', 'exec', this.v.ns, 'nft', ...args] : null;
    return cmd ? execFileSync('ip', cmd, { encoding: 'utf8', stdio: 'pipe' }) : execFileSync('nft', args, { encoding: 'utf8', stdio: 'pipe' });
  }

  private read(inNs: boolean, name: string): number {
    const out = this.nft(inNs, 'list', 'counter', 'inet', this.table, name);
    return Number(/packets (\d+)/.exec(out)?.[1] ?? NaN);
  }

  /** SYNs that left HOST_IF for far port `p` so far. */
  sent(p: number): number {
    return this.read(false, `out${p}`);
  }

  /** SYNs that arrived at the far side for port `p` so far. */
  arrived(p: number): number {
    return this.read(true, `in${p}`);
  }

  remove(): void {
    try { this.nft(false, 'delete', 'table', 'inet', this.table); } catch { /* not there */ }
    try { this.nft(true, 'delete', 'table', 'inet', this.table); } catch { /* not there / namespace gone */ }
  }
}
