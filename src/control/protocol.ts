// The control socket protocol: one JSON request line, one JSON reply line.

export type ControlRequest =
  | { cmd: 'ping' }
  | { cmd: 'poke' } // maildrop has new files
  | { cmd: 'flush'; route?: string }
  | { cmd: 'list' }
  | { cmd: 'show'; id: string }
  // `by`: who asked (the client's user name), for the message's history.
  | { cmd: 'remove'; id: string; by?: string }
  | { cmd: 'hold'; id: string; by?: string }
  | { cmd: 'release'; id: string; by?: string }
  | { cmd: 'requeue'; id: string; by?: string }
  // The public socket: an ordinary user's own messages; `proof` names a file they made (control/peer.ts).
  | { cmd: 'history'; proof: string; id?: string; address?: string; since?: number }
  | { cmd: 'status' }
  | { cmd: 'link'; name: string; up: boolean }
  | { cmd: 'fetch'; account?: string }
  | { cmd: 'reload' };

// `denied`: the request is not allowed on this socket (the client exits 77, EX_NOPERM).
export type ControlReply = { ok: true; data?: unknown } | { ok: false; error: string; denied?: boolean };

/** A request this socket (or this user) may not make. */
export class PermissionError extends Error {
  override name = 'PermissionError';
}

export function controlSocketPath(stateDir: string): string {
  return `${stateDir}/control.sock`;
}

/** The socket anyone may connect to; it answers read-only requests (control/commands.ts). */
export function publicSocketPath(stateDir: string): string {
  return `${stateDir}/control-public.sock`;
}
