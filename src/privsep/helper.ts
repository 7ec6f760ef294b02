// The privileged delivery helper (OpenSMTPD's parent, kept small): forked by the daemon while
// it is still root, it stays root and does one thing — for a named local user, deliver the
// message the daemon streams to it, as that user, and report the result. It reads no SMTP, no
// queue and no configuration: its settings come with the fork (argv), its requests over the
// fork's IPC channel, which only the daemon holds. Each delivery runs in a child that drops
// to the user before loading any delivery code (as-user.ts).

import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readForwardAsRoot } from './forward.js';
import { approve, eligibleUser } from './policy.js';
import type { FromHelper, HelperResult, HelperSettings, ToHelper } from './protocol.js';

const settings = JSON.parse(process.argv[2] ?? '{}') as HelperSettings;
const AS_USER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'as-user.js');

interface Running {
  child: ChildProcess | null;
  /** The result went to the daemon; later events of this delivery are ignored. */
  done: boolean;
}
const running = new Map<number, Running>();

/** Longer than any delivery may take in the child (the MDA's own timeout is 10 min). */
const DEADLINE_MS = 11 * 60_000;

const MAX_CHILDREN = 8;
const MAX_PER_USER = 2;
let active = 0;
const perUser = new Map<number, number>();
const waiting: { uid: number; go: () => void }[] = [];
const mayStart = (uid: number) => active < MAX_CHILDREN && (perUser.get(uid) ?? 0) < MAX_PER_USER;
const take = (uid: number) => {
  active++;
  perUser.set(uid, (perUser.get(uid) ?? 0) + 1);
};

/** How long a delivery waits for a child slot before it is deferred (the daemon's job ends). */
const SLOT_WAIT_MS = 30_000;

/**
 * Waits until a delivery child may start for `uid`, then counts it; false after SLOT_WAIT_MS. A
 * bounded wait: otherwise one user's slow pipe would keep every delivery job of the daemon
 * waiting here (64 jobs, 2 at a time, 10 min each), remote mail included.
 */
function slot(uid: number): Promise<boolean> {
  if (mayStart(uid)) {
    take(uid);
    return Promise.resolve(true);
  }
  return new Promise((resolve) => {
    const w = { uid, go: () => (clearTimeout(timer), resolve(true)) };
    const timer = setTimeout(() => {
      waiting.splice(waiting.indexOf(w), 1);
      resolve(false);
    }, SLOT_WAIT_MS);
    waiting.push(w);
  });
}

function free(uid: number): void {
  active--;
  const n = (perUser.get(uid) ?? 1) - 1;
  if (n) perUser.set(uid, n);
  else perUser.delete(uid);
  for (let i = 0; i < waiting.length; i++) {
    const w = waiting[i]!;
    if (!mayStart(w.uid)) continue;
    waiting.splice(i--, 1);
    take(w.uid);
    w.go();
    if (active >= MAX_CHILDREN) break;
  }
}

/** Whether process `pid` is stopped (state T or t in /proc/PID/stat). */
function stopped(pid: number | undefined): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    return /^[Tt]$/.test(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
}

const send = (m: FromHelper) => process.send?.(m);

function finish(id: number, result: HelperResult): void {
  const r = running.get(id);
  if (!r || r.done) return;
  r.done = true;
  running.delete(id);
  send({ t: 'result', id, result });
}

async function start(id: number, req: Extract<ToHelper, { t: 'deliver' }>['req']): Promise<void> {
  const r: Running = { child: null, done: false };
  running.set(id, r);
  let ok;
  try {
    ok = await approve(settings, req);
  } catch (err) {
    ok = { outcome: 'tempfail' as const, message: `4.3.0 delivery helper: ${(err as Error).message}` };
  }
  if ('outcome' in ok) {
    process.stderr.write(`tidemail delivery helper: ${ok.message} (user=${req.user} kind=${req.kind}${req.path ? ` path=${req.path}` : ''})\n`);
    return finish(id, ok);
  }
  // At most MAX_CHILDREN delivery processes (~40 MB each), MAX_PER_USER for any one user: a
  // user whose .forward command is slow, or a peer sending many sessions at once, waits its turn
  // instead of filling the memory with node processes (Postfix: local_destination_concurrency_limit).
  const uid = ok.user.uid;
  if (!(await slot(uid))) {
    const busy = (perUser.get(uid) ?? 0) >= MAX_PER_USER ? `${MAX_PER_USER} deliveries as ${req.user} are still running` : `${MAX_CHILDREN} deliveries are still running`;
    return finish(id, { outcome: 'tempfail', message: `4.3.2 delivery helper busy: ${busy} after ${SLOT_WAIT_MS / 1000} s; retried later` });
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    free(uid);
  };
  const job = { req, user: ok.user, extraGid: ok.extraGid, groups: ok.groups, mda: settings.mda };
  // A small environment: nothing of the daemon's leaks into a user's pipe.
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/local/bin:/usr/bin:/bin', ...(process.env['TZ'] ? { TZ: process.env['TZ'] } : {}) };
  // The job goes over the child's IPC channel, not argv: ps would show who mails whom.
  const child = fork(AS_USER, [], { stdio: ['pipe', 'ignore', 'inherit', 'ipc'], env, execArgv: [] });
  r.child = child;
  child.send(job);
  let result: HelperResult | null = null;
  child.on('message', (m) => (result = m as HelperResult));
  child.once('exit', release);
  child.on('error', (err) => (release(), finish(id, { outcome: 'tempfail', message: `4.3.0 cannot start the delivery as ${req.user}: ${err.message}` })));
  // 'close', not 'exit': by then the channel is drained, so a sent result is never missed.
  child.on('close', (code, signal) => finish(id, result ?? { outcome: 'tempfail', message: `4.3.0 the delivery as ${req.user} ended (${signal ?? `exit ${code}`}) without a result` }));
  child.stdin!.on('error', () => undefined); // a pipe that exits early closes its stdin
  // The child runs as the user, who may signal it: a SIGSTOP would hold the delivery (and a slot
  // of the daemon's) for ever. A stopped child is killed; so is one past every delivery timeout
  // (the MDA's 10 min, the mbox lock's 30 s), whatever else holds it.
  const watch = setInterval(() => {
    if (!stopped(child.pid)) return;
    child.kill('SIGKILL');
    finish(id, { outcome: 'tempfail', message: `4.3.0 the delivery as ${req.user} was stopped (SIGSTOP, by its user?) and is killed; it is retried later` });
  }, 1000);
  const deadline = setTimeout(() => {
    child.kill('SIGKILL');
    finish(id, { outcome: 'tempfail', message: `4.4.7 the delivery as ${req.user} took longer than ${DEADLINE_MS / 60_000} min and is killed; it is retried later` });
  }, DEADLINE_MS);
  child.once('exit', () => {
    clearInterval(watch);
    clearTimeout(deadline);
  });
  send({ t: 'more', id });
}

process.on('message', (raw) => {
  const m = raw as ToHelper;
  const r = m.t === 'forward' ? undefined : running.get(m.id);
  switch (m.t) {
    case 'deliver':
      void start(m.id, m.req);
      return;
    case 'forward': {
      const u = eligibleUser(settings, m.user, m.uid);
      if ('outcome' in u) return void send({ t: 'forward', id: m.id, forward: { kind: 'error', message: u.message } });
      readForwardAsRoot(u).then(
        (forward) => send({ t: 'forward', id: m.id, forward }),
        (err: Error) => send({ t: 'forward', id: m.id, forward: { kind: 'error', message: err.message } }),
      );
      return;
    }
    case 'data':
      if (!r?.child) return;
      // Ask for the next chunk only once this one is taken: memory stays at one chunk.
      if (r.child.stdin!.write(Buffer.from(m.chunk.buffer, m.chunk.byteOffset, m.chunk.byteLength))) send({ t: 'more', id: m.id });
      else r.child.stdin!.once('drain', () => send({ t: 'more', id: m.id }));
      return;
    case 'end':
      r?.child?.stdin!.end();
      return;
    case 'abort':
      r?.child?.kill('SIGTERM');
      return;
  }
});

// The daemon is gone: nobody to report to, and nothing must outlive it with root.
process.on('disconnect', () => {
  for (const r of running.values()) r.child?.kill('SIGTERM');
  process.exit(0);
});
process.on('SIGTERM', () => undefined); // the daemon's process group gets it; we end with the daemon
send({ t: 'ready' });
