// The servers `npm run bench` (run.ts) measures, each started, listening and able to stop and
// check itself: the floor (a raw sink in its own process), a private Postfix instance (when
// installed and root), and the tidemail daemon (also started alone by run-probes.ts for the
// big message). Stopping checks that each queue holds exactly the messages it accepted.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { descendants, fmtMiB, freePort, nowMs, readProcMem, sleep } from './common.js';
import { startSinkProcess } from './sink.js';
import { readTree } from './smaps.js';
import { abortPostfixSync, startPostfix, type PostfixInstance, type PostfixTools } from './postfix.js';
import { daemonEntry, startTidemail, tidemailQueueCount, type Daemon } from './tidemail.js';
import { KEEP, ROOT, checks, log, mem, notes, onCleanup, problems, type Target } from './run-context.js';

/** A server under test, up and listening. */
export interface Subject {
  target: Target;
  port: number;
  /** the processes that make up the server (main one first), for CPU accounting */
  pids: () => number[];
  /** messages it accepted so far, warm-up included (compared with its queue at the end) */
  accepted: number;
  /** stop it and check / clean up; never throws */
  stop: () => Promise<void>;
}

const FLOORS: Record<'floor' | 'floor+fsync' | 'engine' | 'engine+fsync', { what: string; opts: Parameters<typeof startSinkProcess>[1] }> = {
  floor: { what: 'raw sink', opts: {} },
  'floor+fsync': { what: 'raw sink + fdatasync per message', opts: { fsync: true } },
  engine: { what: 'our SMTP engine storing nothing', opts: { script: path.join(ROOT, 'dist', 'test', 'bench', 'stages.js'), args: ['--serve', '0'] } },
  'engine+fsync': { what: 'our SMTP engine + fdatasync per message', opts: { script: path.join(ROOT, 'dist', 'test', 'bench', 'stages.js'), args: ['--serve', '0', '--fsync'] } },
};

/**
 * The floors, each in its own process: the raw sink, and our engine with no storage, each alone
 * and with one fdatasync per message: what Node, our engine and the disk cost before tidemail.
 */
export async function startFloors(): Promise<Subject[]> {
  const out: Subject[] = [];
  for (const target of Object.keys(FLOORS) as Array<keyof typeof FLOORS>) out.push(await startFloor(target));
  return out;
}

async function startFloor(target: keyof typeof FLOORS): Promise<Subject> {
  const sink = await startSinkProcess(0, FLOORS[target].opts);
  const unregister = onCleanup(() => process.kill(sink.pid, 'SIGKILL'));
  log(`${target}: ${FLOORS[target].what}, pid ${sink.pid} on 127.0.0.1:${sink.port}`);
  return {
    target,
    port: sink.port,
    pids: () => [sink.pid],
    accepted: 0,
    stop: async () => {
      await sink.stop();
      unregister();
    },
  };
}

/** A private Postfix instance, or null (with a note) when that is not possible here. */
export async function startPostfixSubject(tools: PostfixTools | null): Promise<Subject | null> {
  if (!tools) {
    notes.push('Postfix is not installed: no postfix row.');
    return null;
  }
  if (process.getuid?.() !== 0) {
    notes.push('Postfix row skipped: a private Postfix instance needs root (postfix -c DIR start).');
    return null;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-postfix-'));
  fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
  const port = await freePort();
  const cleanup = (): void => {
    if (KEEP) log(`postfix: kept ${dir}`);
    else fs.rmSync(dir, { recursive: true, force: true });
  };
  const unregister = onCleanup(() => {
    abortPostfixSync(tools, dir);
    cleanup();
  });
  let pf: PostfixInstance;
  try {
    pf = await startPostfix(tools, dir, port);
  } catch (e) {
    problems.push(`postfix: ${(e as Error).message}`);
    log(`postfix: FAILED ${(e as Error).message}`);
    unregister();
    cleanup();
    return null;
  }
  log(`postfix: private instance ${tools.version} in ${dir}, smtpd on 127.0.0.1:${port}, master pid ${pf.masterPid()}`);
  const subject: Subject = {
    target: 'postfix',
    port,
    pids: () => {
      const master = pf.masterPid();
      return master ? [master, ...descendants(master)] : [];
    },
    accepted: 0,
    stop: async () => {
      await sleep(500);
      const queued = pf.queuedCount();
      log(`postfix: ${queued} messages in its queue (held, not delivered); ${subject.accepted} were accepted`);
      checks.push(`postfix: ${queued} messages in its queue for ${subject.accepted} accepted` +
        (queued === subject.accepted ? ' (match)' : ''));
      if (queued !== subject.accepted) problems.push(`postfix: ${queued} messages queued but ${subject.accepted} accepted`);
      await pf.stop();
      unregister();
      cleanup();
    },
  };
  return subject;
}

/** A started daemon plus what it takes to stop it and clean up after it. */
export interface RunningDaemon {
  daemon: Daemon;
  configPath: string;
  /** SIGTERM, record problems, run `afterStop` (daemon stopped, dir still there), remove the dir */
  finish(afterStop?: (configPath: string) => Promise<void>): Promise<void>;
}

export async function launchDaemon(label: string, nodeArgs?: string[]): Promise<RunningDaemon> {
  const port = await freePort();
  const { daemon, dir, notes: startNotes } = await startTidemail(ROOT, port, { nodeArgs });
  // The same start-up note comes from every daemon start; keep one (ports differ, so compare
  // without digits).
  for (const n of startNotes) {
    const bare = (x: string): string => x.replace(/\d+/g, '');
    if (!notes.some((m) => bare(m) === bare(`tidemail: ${n}`))) notes.push(`tidemail: ${n}`);
  }
  log(`tidemail (${label}): pid ${daemon.pid} on 127.0.0.1:${port} as user "${daemon.user}"` +
    `${daemon.readyLogged() ? ', "daemon ready" logged' : ''}`);
  const unregister = onCleanup(() => {
    try {
      process.kill(daemon.pid, 'SIGKILL');
    } catch {
      // gone
    }
    if (!KEEP) fs.rmSync(dir, { recursive: true, force: true });
  });
  const configPath = path.join(dir, 'tidemail.toml');
  return {
    daemon,
    configPath,
    finish: async (afterStop) => {
      if (daemon.exited()) {
        problems.push(`tidemail (${label}): the daemon died during the run (${daemon.exitInfo()}); log tail:\n${daemon.logTail(15)}`);
      } else {
        const t0 = nowMs();
        const how = await daemon.stop();
        const ms = nowMs() - t0;
        if (how !== 'exit code 0') {
          problems.push(`tidemail (${label}): SIGTERM shutdown ended with "${how}" after ${ms.toFixed(0)} ms; log tail:\n${daemon.logTail(10)}`);
        } else {
          log(`tidemail (${label}): stopped (${how}) in ${ms.toFixed(0)} ms`);
        }
      }
      unregister();
      try {
        if (afterStop) await afterStop(configPath);
      } catch (e) {
        problems.push(`tidemail (${label}): ${(e as Error).message}`);
      }
      const errorLines = daemon.logTail(300).split('\n').filter((l) => /\b(error|fatal|uncaught|unhandled)\b/i.test(l));
      if (errorLines.length) {
        problems.push(`tidemail (${label}): ${errorLines.length} error-looking log lines, e.g.:\n  ${errorLines.slice(0, 3).join('\n  ')}`);
      }
      if (KEEP) log(`tidemail (${label}): kept ${dir} (daemon.log inside)`);
      else fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * The daemon for the throughput runs. Its idle RSS is taken here (start + 2 s, before any
 * mail); stop() records the RSS after the load and checks that the queue holds every message
 * that was answered 250.
 */
export async function startTidemailSubject(): Promise<Subject | null> {
  if (!daemonEntry(ROOT)) {
    notes.push('tidemail row skipped: dist/src/main.js does not exist yet.');
    return null;
  }
  let run: RunningDaemon;
  try {
    run = await launchDaemon('throughput');
  } catch (e) {
    problems.push(`tidemail: ${(e as Error).message}`);
    log(`tidemail: FAILED ${(e as Error).message}`);
    return null;
  }
  const d = run.daemon;
  await sleep(2000);
  mem.idle = readProcMem(d.pid) ?? undefined;
  mem.idleTree = readTree(d.pid) ?? undefined;
  log(`tidemail: idle RSS ${fmtMiB(mem.idle?.rssKiB ?? NaN)} (VmHWM so far ${fmtMiB(mem.idle?.hwmKiB ?? NaN)})`);
  const subject: Subject = {
    target: 'tidemail',
    port: d.port,
    pids: () => [d.pid, ...descendants(d.pid)],
    accepted: 0,
    stop: async () => {
      mem.afterLoad = readProcMem(d.pid) ?? undefined;
      mem.children = descendants(d.pid);
      mem.afterTree = readTree(d.pid) ?? undefined;
      log(`tidemail: after load RSS ${fmtMiB(mem.afterLoad?.rssKiB ?? NaN)}, peak (VmHWM) ${fmtMiB(mem.afterLoad?.hwmKiB ?? NaN)}`);
      await run.finish(async (configPath) => {
        const queued = await tidemailQueueCount(ROOT, configPath);
        if (queued === null) {
          checks.push('tidemail: could not read the queue size from `tidemail status` after the run');
          return;
        }
        log(`tidemail: ${queued} messages in its queue after stopping; ${subject.accepted} were accepted`);
        checks.push(`tidemail: ${queued} messages in its queue after SIGTERM for ${subject.accepted} accepted` +
          (queued === subject.accepted ? ' (match)' : ''));
        if (queued !== subject.accepted) {
          problems.push(`tidemail: ${queued} messages in the queue but ${subject.accepted} were accepted (250)`);
        }
      });
    },
  };
  return subject;
}
