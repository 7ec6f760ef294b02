// The control socket protocol: one JSON request line, one JSON reply line.

export type ControlRequest =
  | { cmd: 'ping' }
  | { cmd: 'poke' } // maildrop has new files
  | { cmd: 'flush'; route?: string }
  | { cmd: 'list' }
  | { cmd: 'show'; id: string }
  | { cmd: 'remove'; id: string }
  | { cmd: 'hold'; id: string }
  | { cmd: 'release'; id: string }
  | { cmd: 'requeue'; id: string }
  | { cmd: 'status' }
  | { cmd: 'link'; name: string; up: boolean }
  | { cmd: 'fetch'; account?: string }
  | { cmd: 'reload' };

export type ControlReply = { ok: true; data?: unknown } | { ok: false; error: string };

export function controlSocketPath(stateDir: string): string {
  return `${stateDir}/control.sock`;
}
