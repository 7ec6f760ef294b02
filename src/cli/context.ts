// What every command needs: the config, where the state lives, and a way to reach the daemon.

import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { controlRequest } from '../control/client.js';
import { controlSocketPath, type ControlRequest } from '../control/protocol.js';
import type { SqliteQueueStore } from '../queue/sqlite.js';

export interface CliContext {
  config: Config;
  socket: string;
  /** The daemon's answer, or null when no daemon is running. */
  ask(req: ControlRequest, timeoutMs?: number): Promise<unknown | null>;
  /** Opens the queue database directly (daemon not running). */
  openStore(): Promise<SqliteQueueStore>;
}

export function cliContext(configPath?: string): CliContext {
  const config = loadConfig(configPath);
  const socket = controlSocketPath(config.stateDir);
  return {
    config,
    socket,
    ask: (req, timeoutMs) => controlRequest(socket, req, timeoutMs),
    // Loaded when used: sqlite3's bindings are not needed to write a maildrop file.
    openStore: () => import('../queue/sqlite.js').then(({ SqliteQueueStore }) => SqliteQueueStore.open(config.stateDir, Date.now)),
  };
}

/** Pulls `--config FILE` / `-C FILE` out of an argument list. */
export function takeConfigOption(args: string[]): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--config' || a === '-C') {
      const v = args[i + 1];
      args.splice(i, 2);
      return v;
    }
    if (a.startsWith('--config=')) {
      args.splice(i, 1);
      return a.slice('--config='.length);
    }
  }
  return undefined;
}
