// The daemon's control sockets (unix domain, in the state dir): control.sock, mode 0600 for the
// daemon user (root can always connect), used by the CLI for flush, queue management, status and
// reload; and control-public.sock, mode 0666, whose handler answers only read-only requests
// (control/commands.ts decides what).

import fs from 'node:fs';
import net from 'node:net';
import { log } from '../log/log.js';
import { PermissionError, type ControlReply, type ControlRequest } from './protocol.js';

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

export class ControlServer {
  private server: net.Server | null = null;

  constructor(private readonly path: string, private readonly handle: ControlHandler, private readonly mode = 0o600) {}

  async start(): Promise<void> {
    try {
      fs.unlinkSync(this.path); // a stale socket from a killed daemon
    } catch {
      /* none */
    }
    const server = net.createServer((sock) => this.serve(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    fs.chmodSync(this.path, this.mode);
    this.server = server;
  }

  private serve(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 64 * 1024) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      let req: ControlRequest;
      try {
        req = JSON.parse(line) as ControlRequest;
      } catch {
        return this.reply(sock, { ok: false, error: 'malformed request' });
      }
      // Anyone may write to the public socket: only an object with a command name goes on.
      if (!req || typeof req !== 'object' || typeof (req as { cmd?: unknown }).cmd !== 'string') return this.reply(sock, { ok: false, error: 'malformed request' });
      this.handle(req).then(
        (data) => this.reply(sock, { ok: true, data }),
        (err: Error) => {
          log.debug(null, 'control request failed', { cmd: req.cmd, error: err.message });
          this.reply(sock, { ok: false, error: err.message, ...(err instanceof PermissionError ? { denied: true } : {}) });
        },
      );
    });
  }

  private reply(sock: net.Socket, r: ControlReply): void {
    sock.end(JSON.stringify(r) + '\n');
  }

  async close(): Promise<void> {
    if (!this.server) return;
    await new Promise<void>((r) => this.server!.close(() => r()));
    try {
      fs.unlinkSync(this.path);
    } catch {
      /* gone */
    }
  }
}
