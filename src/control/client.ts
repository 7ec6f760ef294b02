// CLI side of the control socket. `null` means "no daemon is listening" so the caller can
// fall back to working on the queue database directly.

import net from 'node:net';
import type { ControlReply, ControlRequest } from './protocol.js';

export class DaemonError extends Error {
  override name = 'DaemonError';
}

export function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 30_000): Promise<unknown | null> {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new DaemonError(`the daemon did not answer within ${timeoutMs / 1000}s`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify(req) + '\n'));
    sock.on('data', (d: string) => (buf += d));
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(null);
      else if (err.code === 'EACCES') reject(new DaemonError(`permission denied on ${socketPath} (run as root or the tidemail user)`));
      else reject(err);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        const r = JSON.parse(buf) as ControlReply;
        if (r.ok) resolve(r.data ?? true);
        else reject(new DaemonError(r.error));
      } catch {
        reject(new DaemonError('malformed reply from the daemon'));
      }
    });
  });
}
