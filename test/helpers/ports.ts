import fs from 'node:fs';
import net from 'node:net';

/** Bound to `port` (0: one the kernel picks) and closed again: the port it got, or null. */
function bindAndClose(port: number, host: string): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', (err: NodeJS.ErrnoException) => (port && err.code === 'EADDRINUSE' ? resolve(null) : reject(err)));
    s.listen(port, host, () => {
      const got = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(got));
    });
  });
}

/** The first port of the kernel's ephemeral range (what connect() and listen(0) take from). */
function ephemeralStart(): number {
  try {
    return Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]) || 0;
  } catch {
    return 0;
  }
}

const LOWEST = 10_000;
const handedOut = new Set<number>();

/**
 * A port that was free a moment ago, for a daemon or peer a test starts later. It is picked at
 * random below the ephemeral range: one from listen(0) is ephemeral, and in the second or more
 * before the daemon binds it (under load) any connect() or listen(0) on the machine may take it
 * ("already in use" in a loaded run). Never the same port twice in one test process.
 */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const below = ephemeralStart();
  for (let i = 0; below - LOWEST >= 1000 && i < 50; i++) {
    const port = LOWEST + Math.floor(Math.random() * (below - LOWEST));
    if (handedOut.has(port) || (await bindAndClose(port, host)) === null) continue;
    handedOut.add(port);
    return port;
  }
  return (await bindAndClose(0, host))!;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Polls `check` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 50): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Whether something accepts TCP connections on 127.0.0.1:port (a peer we started is up). */
export function canConnect(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise<boolean>((r) => {
    const s = net.connect(port, host, () => (s.destroy(), r(true)));
    s.on('error', () => r(false));
  });
}
