// CLI side of the control sockets. `null` means "no daemon is listening" so the caller can
// fall back to working on the queue database directly. A user who may not use the admin socket
// (control.sock, 0600) is sent to the public one for what ordinary users may see (mailq, status,
// the history of their own messages); anything else is a clear "permission denied", exit 77.

import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { makeProof } from './peer.js';
import { publicSocketPath, type ControlReply, type ControlRequest } from './protocol.js';

export class DaemonError extends Error {
  override name = 'DaemonError';
}

/** Not allowed for this user; `code` makes cli/exit.ts answer EX_NOPERM (77). */
export class NoPermissionError extends Error {
  override name = 'NoPermissionError';
  readonly code = 'EACCES';
}

/** Requests an ordinary user may send (answered on the public socket, filtered). */
const PUBLIC_COMMANDS = new Set(['ping', 'list', 'status', 'history']);

/** Who runs this command, for the history of admin actions: "root (sudo alice)". */
export function whoAmI(): string {
  let name: string;
  try {
    name = os.userInfo().username;
  } catch {
    name = `uid ${process.getuid?.() ?? '?'}`;
  }
  const sudo = process.env.SUDO_USER;
  return sudo && sudo !== name ? `${name} (sudo ${sudo})` : name;
}

export async function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 30_000): Promise<unknown | null> {
  try {
    return await ask(socketPath, req, timeoutMs);
  } catch (err) {
    if (!(err instanceof NoPermissionError)) throw err;
    if (!PUBLIC_COMMANDS.has(req.cmd)) {
      throw new NoPermissionError(`"${describe(req)}" needs root or the daemon's user (anyone may run mailq, tidemail status and tidemail log for their own messages)`);
    }
    return askPublic(path.dirname(socketPath), req, timeoutMs);
  }
}

async function askPublic(stateDir: string, req: ControlRequest, timeoutMs: number): Promise<unknown | null> {
  if (req.cmd !== 'history') return ask(publicSocketPath(stateDir), req, timeoutMs);
  let proof;
  try {
    proof = makeProof(stateDir);
  } catch (err) {
    // No maildrop (the daemon never ran here) means no daemon either.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    if ((err as NodeJS.ErrnoException).code === 'EACCES') throw new NoPermissionError(socketDenied(publicSocketPath(stateDir)));
    throw err;
  }
  try {
    return await ask(publicSocketPath(stateDir), { ...req, proof: proof.name }, timeoutMs);
  } finally {
    proof.done();
  }
}

function describe(req: ControlRequest): string {
  const names: Record<string, string> = { flush: 'tidemail queue flush', reload: 'tidemail reload', fetch: 'tidemail fetch', link: 'tidemail link', show: 'tidemail queue show', poke: 'poking the daemon' };
  return names[req.cmd] ?? `tidemail queue ${req.cmd}`;
}

/** Why the socket is closed to us: most often the state dir itself cannot be entered. */
function socketDenied(socketPath: string): string {
  const dir = path.dirname(socketPath);
  const fix = 'run this as root or as the daemon\'s user (`user` in the config)';
  try {
    fs.accessSync(dir, fs.constants.X_OK);
  } catch {
    let how = '';
    try {
      const st = fs.statSync(dir);
      how = ` (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, owner uid ${st.uid})`;
    } catch {
      /* the mode is a hint only */
    }
    return `the state dir ${dir} cannot be entered by this user${how}, so neither the daemon nor the queue can be reached\n  fix: ${fix}`;
  }
  return `the daemon's socket ${socketPath} is not open to this user\n  fix: ${fix}`;
}

function ask(socketPath: string, req: ControlRequest, timeoutMs: number): Promise<unknown | null> {
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
      else if (err.code === 'EACCES') reject(new NoPermissionError(socketDenied(socketPath)));
      // Reset, or a full backlog (EAGAIN): the daemon is there but did not take us (control/server.ts caps connections).
      else reject(new DaemonError(`the daemon at ${socketPath} did not take the request (${err.code ?? err.message}: too many connections at once?); try again`));
    });
    sock.on('end', () => {
      clearTimeout(timer);
      if (!buf) return reject(new DaemonError(`the daemon at ${socketPath} closed the connection without answering (too many connections at once?); try again`));
      try {
        const r = JSON.parse(buf) as ControlReply;
        if (r.ok) resolve(r.data ?? true);
        else reject(r.denied ? new NoPermissionError(r.error) : new DaemonError(r.error));
      } catch {
        reject(new DaemonError('malformed reply from the daemon'));
      }
    });
  });
}
