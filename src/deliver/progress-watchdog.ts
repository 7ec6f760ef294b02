// The progress watchdog of an outgoing SMTP connection (issue 14). On a lossy link that stays
// "up", TCP retransmits with exponential back-off and gives up only after ~15 minutes; the
// per-reply deadlines (smtp-deadline.ts) are minutes long because a server may think that
// long. Neither tells "the server is thinking" from "nothing gets through". This does: once a
// second it looks at what we still owe the network — bytes in our write buffer, and bytes the
// kernel has sent but the peer not acknowledged (tx_queue in /proc/net/tcp{,6}) — and at what
// arrived. With data outstanding and none of it acknowledged, nothing received, for
// `progressMs`, the path is dead: the connection is cut and the delivery retried at once on a
// new one. With nothing outstanding the peer has everything and it is its turn: no stall.
// One timer and one read of /proc for every watched connection together.

import fs from 'node:fs';
import type { Socket } from 'node:net';

const TICK_MS = 1000;

interface Watched {
  /** The TCP socket (its ports find it in /proc). */
  tcp: Socket;
  /** The socket SMTP is spoken on (the TLS one, when encrypted), for bytes received. */
  outer: () => { bytesRead: number; writableLength: number } | undefined;
  progressMs: number;
  lastProgress: number;
  lastRx: number;
  lastPending: number;
  onStall: (outstanding: number, seconds: number) => void;
}

const watched = new Set<Watched>();
let timer: NodeJS.Timeout | null = null;
/** Sockets whose link is known to be down (smtp-after-dot.ts): nothing can pass; not a stall. */
const paused = new WeakSet<Socket>();

/** While on, `tcp` counts as progressing; when turned off its limit counts from then. */
export function pauseProgress(tcp: Socket, on: boolean): void {
  if (on) paused.add(tcp);
  else paused.delete(tcp);
}

/** tx_queue by "localPort:remotePort" (hex ports as /proc writes them), or null without /proc. */
function kernelQueues(): Map<string, number> | null {
  const out = new Map<string, number>();
  let any = false;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'latin1');
    } catch {
      continue;
    }
    any = true;
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 5) continue;
      const local = f[1]!.slice(f[1]!.lastIndexOf(':') + 1);
      const remote = f[2]!.slice(f[2]!.lastIndexOf(':') + 1);
      const tx = Number.parseInt(f[4]!.split(':')[0]!, 16);
      out.set(`${local}:${remote}`, tx);
    }
  }
  return any ? out : null;
}

function hexPort(p: number | undefined): string {
  return (p ?? 0).toString(16).toUpperCase().padStart(4, '0');
}

function tick(): void {
  const now = Date.now();
  const queues = kernelQueues();
  for (const w of [...watched]) {
    if (w.tcp.destroyed) {
      watched.delete(w);
      continue;
    }
    if (paused.has(w.tcp)) {
      w.lastProgress = now;
      continue;
    }
    const outer = w.outer();
    const rx = Math.max(outer?.bytesRead ?? 0, w.tcp.bytesRead);
    const kernel = queues?.get(`${hexPort(w.tcp.localPort)}:${hexPort(w.tcp.remotePort)}`) ?? 0;
    const pending = kernel + w.tcp.writableLength + (outer && outer !== (w.tcp as unknown) ? outer.writableLength : 0);
    if (rx !== w.lastRx || pending < w.lastPending || pending === 0) w.lastProgress = now;
    w.lastRx = rx;
    w.lastPending = pending;
    if (now - w.lastProgress >= w.progressMs) {
      watched.delete(w);
      w.onStall(pending, Math.round((now - w.lastProgress) / 1000));
    }
  }
  if (!watched.size && timer) {
    clearInterval(timer);
    timer = null;
  }
}

/**
 * Watches `tcp` until it closes or `stop()` is called; `onStall` runs once, when data has been
 * outstanding for `progressMs` with nothing acknowledged and nothing received.
 */
export function watchProgress(
  tcp: Socket,
  outer: Watched['outer'],
  progressMs: number,
  onStall: Watched['onStall'],
): { stop(): void } {
  const w: Watched = { tcp, outer, progressMs, lastProgress: Date.now(), lastRx: 0, lastPending: 0, onStall };
  watched.add(w);
  if (!timer) {
    timer = setInterval(tick, Math.min(TICK_MS, progressMs));
    timer.unref();
  }
  const stop = () => watched.delete(w);
  tcp.once('close', stop);
  return { stop };
}
