// The daemon's side of the delivery helper (helper.ts): forks it while still root, then asks
// it for deliveries as local users, streaming each message in chunks the helper pulls.

import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { LocalConfig } from '../config/schema.js';
import type { DeliveryResult } from '../deliver/transport.js';
import type { ForwardFile } from '../local/forward.js';
import type { SystemUser } from '../local/users.js';
import { log } from '../log/log.js';
import { helperEntry } from './helper-entry.js';
import type { DeliveryRequest, FromHelper, HelperSettings, ToHelper } from './protocol.js';

/**
 * What the helper is allowed to do, from [local]: fixed until the daemon restarts. `runAs`: the
 * daemon's run user, as whom (with the spool dir's group) root's and system accounts' spool
 * files are written; without it those deliveries stay in the daemon.
 */
export function helperSettings(local: LocalConfig, runAs?: SystemUser): HelperSettings {
  const templates = [local.maildir, local.mbox].filter((t) => t.startsWith('/') && t.includes('%u')).map((t) => path.normalize(t));
  return {
    minUid: local.minUid,
    templates: [...new Set(templates)],
    maildir: local.maildir,
    mbox: local.mbox,
    mda: local.mda,
    forwardCommands: local.allowMailToCommands.includes('forward'),
    forwardFiles: local.allowMailToFiles.includes('forward'),
    ...(runAs ? { spoolAs: { name: runAs.name, uid: runAs.uid, gid: runAs.gid } } : {}),
  };
}

interface Pending {
  next: (() => void) | null;
  resolve: (r: DeliveryResult) => void;
}

export class DeliveryHelper {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly forwards = new Map<number, { resolve: (f: ForwardFile) => void; reject: (e: Error) => void }>();
  private gone: string | null = null;

  private constructor(private readonly child: ChildProcess, readonly settings: HelperSettings) {
    child.on('message', (raw) => this.onMessage(raw as FromHelper));
    child.on('exit', (code, signal) => {
      this.gone = signal ?? `exit ${code}`;
      if (!this.stopping) log.error(null, 'the local delivery helper stopped; deliveries to local users are deferred until tidemail is restarted', { how: this.gone, fix: 'restart tidemail as root (systemctl restart tidemail)' });
      this.failAll();
    });
  }

  private stopping = false;

  /** Forks the helper; call as root, before giving root up. */
  static async start(local: LocalConfig, runAs?: SystemUser): Promise<DeliveryHelper> {
    const settings = helperSettings(local, runAs);
    const child = fork(helperEntry(), [JSON.stringify(settings)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      serialization: 'advanced', // Buffers cross as bytes, not JSON arrays
      execArgv: [],
      env: { PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin', ...(process.env['TZ'] ? { TZ: process.env['TZ'] } : {}) },
    });
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (code) => reject(new Error(`the local delivery helper did not start (exit ${code})`)));
      child.once('error', reject);
    });
    return new DeliveryHelper(child, settings);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Why the helper is not running (its exit), or null while it runs. */
  get stopped(): string | null {
    return this.gone;
  }

  /** Delivers `body` as req.user; never throws. */
  deliver(req: DeliveryRequest, body: () => Readable): Promise<DeliveryResult> {
    if (this.gone) return Promise.resolve({ outcome: 'tempfail', message: `4.3.0 the local delivery helper is not running (${this.gone}); restart tidemail` });
    const id = this.nextId++;
    return new Promise((resolve) => {
      let stream: Readable | null = null;
      let it: AsyncIterator<Buffer> | null = null;
      const p: Pending = { next: null, resolve };
      p.next = () => {
        stream ??= body();
        it ??= stream[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        it.next().then(
          (n) => this.send(n.done ? { t: 'end', id } : { t: 'data', id, chunk: n.value }),
          (err: Error) => this.send({ t: 'abort', id, message: err.message }),
        );
      };
      this.pending.set(id, p);
      // The iterator is dropped when settled, so a refused request never opens the body.
      const done = p.resolve;
      p.resolve = (r) => {
        void it?.return?.();
        done(r);
      };
      this.send({ t: 'deliver', id, req });
    });
  }

  /**
   * ~user/.forward as the helper reads it (as root, strictly: forward.ts in privsep).
   * @throws when the helper refuses the user or cannot read the file (the resolver defers).
   */
  readForward(u: SystemUser): Promise<ForwardFile> {
    if (this.gone) return Promise.reject(new Error(`the local delivery helper is not running (${this.gone})`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.forwards.set(id, { resolve, reject });
      this.send({ t: 'forward', id, user: u.name, uid: u.uid });
    });
  }

  private send(m: ToHelper): void {
    if (this.child.connected) {
      this.child.send(m);
      return;
    }
    // Nobody will answer: settle everything now rather than leave deliveries hanging.
    this.gone ??= 'disconnected';
    this.failAll();
  }

  private failAll(): void {
    for (const [id, p] of this.pending) this.settle(id, p, { outcome: 'tempfail', message: `4.3.0 the local delivery helper is not running (${this.gone}); restart tidemail` });
    for (const f of this.forwards.values()) f.reject(new Error(`the local delivery helper is not running (${this.gone})`));
    this.forwards.clear();
  }

  private onMessage(m: FromHelper): void {
    if (m.t === 'ready') return;
    if (m.t === 'forward') {
      const f = this.forwards.get(m.id);
      this.forwards.delete(m.id);
      if (m.forward.kind === 'error') f?.reject(new Error(m.forward.message));
      else f?.resolve(m.forward);
      return;
    }
    const p = this.pending.get(m.id);
    if (!p) return;
    if (m.t === 'more') p.next?.();
    else if (m.t === 'result') this.settle(m.id, p, m.result);
  }

  private settle(id: number, p: Pending, r: DeliveryResult): void {
    this.pending.delete(id);
    p.resolve(r);
  }

  stop(): void {
    this.stopping = true;
    this.child.disconnect?.();
  }
}
