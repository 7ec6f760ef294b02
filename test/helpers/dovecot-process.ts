// Running a private Dovecot for tests (POP3 in dovecot.ts, LMTP in dovecot-lmtp.ts): the
// settings for running unprivileged, the process, its readiness, its log, and stopping it.

import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { waitFor } from './ports.js';
import { isRoot } from './tmp.js';

const children = new Set<ChildProcess>();
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/** Unprivileged: every service as ourselves, no chroot, no groups we cannot chown to. */
export function unprivilegedSettings(extra = ''): string {
  if (isRoot()) return '';
  const me = os.userInfo().username;
  return `default_login_user = ${me}
default_internal_user = ${me}
service stats {
  unix_listener stats-writer {
    group =
    mode = 0666
  }
}
service dict {
  unix_listener dict {
    group =
  }
}
service dict-async {
  unix_listener dict-async {
    group =
  }
}
${extra}`;
}

export interface DovecotProcess {
  log(): string;
  stop(): Promise<void>;
}

/** Starts `dovecot -F` on DIR/dovecot.conf (log in DIR/dovecot.log) and waits for `ready`. */
export async function runDovecot(dir: string, ready: () => Promise<boolean>): Promise<DovecotProcess> {
  const proc = spawn('dovecot', ['-F', '-c', path.join(dir, 'dovecot.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited = false;
  const exit = new Promise<void>((r) => {
    const gone = () => {
      exited = true;
      children.delete(proc);
      r();
    };
    proc.on('exit', gone);
    proc.on('error', (err) => {
      out += `cannot run dovecot: ${err.message}\n`;
      gone();
    });
  });
  const log = () => {
    try {
      return fs.readFileSync(path.join(dir, 'dovecot.log'), 'utf8');
    } catch {
      return '';
    }
  };
  try {
    await waitFor('Dovecot to greet', async () => exited || (await ready()), 10_000, 100);
  } catch (err) {
    proc.kill('SIGKILL');
    throw new Error(`Dovecot did not start: ${(err as Error).message}\n${out}${log()}`);
  }
  if (exited) throw new Error(`Dovecot exited at start:\n${out}${log()}`);
  return {
    log,
    stop: async () => {
      if (!exited) proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(t);
    },
  };
}

/** True once something at the address sends a greeting starting with `prefix`. */
export function greets(addr: net.NetConnectOpts, prefix: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(addr);
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.on('error', () => done(false));
    s.on('data', (d) => done(d.toString().startsWith(prefix)));
  });
}
