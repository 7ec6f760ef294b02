// The daemon's control sockets (unix domain, in the state dir): control.sock, mode 0600 for the
// daemon user (root can always connect), used by the CLI for flush, queue management, status and
// reload; and control-public.sock, mode 0666, whose handler answers only read-only requests
// (control/commands.ts decides what).
//
// Anyone may connect to the public socket, so a connection costs its owner nothing and us a
// descriptor: each gets REQUEST_TIMEOUT_MS to send its one request line and REPLY_TIMEOUT_MS to
// read the answer, one request per connection, and at most MAX_PUBLIC_CONNECTIONS at once.
// Without that, one user holding idle connections used up the daemon's descriptors: SMTP
// sessions were reset and deliveries failed with EMFILE until they let go.

import fs from 'node:fs';
import net from 'node:net';
import { log } from '../log/log.js';
import { PermissionError, type ControlReply, type ControlRequest } from './protocol.js';

export type ControlHandler = (req: ControlRequest) => Promise<unknown>;

/** Our own clients write their request as soon as they are connected. */
const REQUEST_TIMEOUT_MS = 5_000;
/** A client that does not read its reply does not keep the socket. */
const REPLY_TIMEOUT_MS = 10_000;
/** Connections at once on a socket others may connect to; more are closed at once. */
export const MAX_PUBLIC_CONNECTIONS = 64;

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
    // The admin socket (0600) is for root and our own user: its clients are not capped.
    if (this.mode & 0o007) server.maxConnections = MAX_PUBLIC_CONNECTIONS;
    this.server = server;
  }

  private serve(sock: net.Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    // Deadlines, not idle timers: a client trickling a byte a second must not keep the socket.
    let deadline = setTimeout(() => sock.destroy(), REQUEST_TIMEOUT_MS);
    sock.once('close', () => clearTimeout(deadline));
    const onData = (d: string) => {
      buf += d;
      if (buf.length > 64 * 1024) return sock.destroy();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      // One request per connection: more lines would each run a command for one descriptor.
      // What follows is read and dropped, so the client's end of the connection is seen.
      sock.off('data', onData);
      sock.on('data', () => undefined);
      // The command may take long (a flush): no deadline while it runs, only for the reply.
      clearTimeout(deadline);
      const reply = (r: ControlReply) => {
        deadline = setTimeout(() => sock.destroy(), REPLY_TIMEOUT_MS);
        sock.end(JSON.stringify(r) + '\n');
      };
      let req: ControlRequest;
      try {
        req = JSON.parse(line) as ControlRequest;
      } catch {
        return reply({ ok: false, error: 'malformed request' });
      }
      // Anyone may write to the public socket: only an object with a command name goes on.
      if (!req || typeof req !== 'object' || typeof (req as { cmd?: unknown }).cmd !== 'string') return reply({ ok: false, error: 'malformed request' });
      this.handle(req).then(
        (data) => reply({ ok: true, data }),
        (err: Error) => {
          log.debug(null, 'control request failed', { cmd: req.cmd, error: err.message });
          reply({ ok: false, error: err.message, ...(err instanceof PermissionError ? { denied: true } : {}) });
        },
      );
    };
    sock.on('data', onData);
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
