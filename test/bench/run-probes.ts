// The measurements of `npm run bench` (run.ts) beside the throughput runs: the daemon's memory
// probes (one huge message on a fresh daemon, plain node at idle, node plus each dependency),
// the fsync latency of the temp dir, and the start-up and per-stage figures that startup.js
// and stages.js measure in their own processes.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fmtMiB, nowMs, readProcMem, resetPeakRss, runCommand, sleep } from './common.js';
import { sendHugeMessage } from './load.js';
import { parseStages, parseStartup, type TargetFigures } from './targets.js';
import { daemonEntry } from './tidemail.js';
import { HUGE_MB, ROOT, checks, log, mem, problems, type HugeFigures } from './run-context.js';
import { readSmaps } from './smaps.js';
import { launchDaemon, type RunningDaemon } from './run-subjects.js';

/** One huge message on a fresh daemon: how much its RSS grows. */
export async function benchHugeMessage(nodeArgs?: string[]): Promise<HugeFigures | undefined> {
  if (!Number.isFinite(HUGE_MB) || HUGE_MB <= 0 || !daemonEntry(ROOT)) return undefined;
  const label = nodeArgs ? `huge message, node ${nodeArgs.join(' ')}` : 'huge message';
  let run: RunningDaemon;
  try {
    run = await launchDaemon(label, nodeArgs);
  } catch (e) {
    problems.push(`tidemail (${label}): ${(e as Error).message}`);
    return undefined;
  }
  const d = run.daemon;
  try {
    await sleep(2000);
    const before = readProcMem(d.pid);
    if (!before) throw new Error('cannot read /proc/<pid>/status of the daemon');
    const hwmReset = resetPeakRss(d.pid);
    let sampledMax = before.rssKiB;
    const timer = setInterval(() => {
      const m = readProcMem(d.pid);
      if (m && m.rssKiB > sampledMax) sampledMax = m.rssKiB;
    }, 50);
    log(`tidemail: sending one ${HUGE_MB} MB message (RSS before ${fmtMiB(before.rssKiB)})`);
    const r = await sendHugeMessage({ host: '127.0.0.1', port: d.port, bytes: HUGE_MB * 1024 * 1024 });
    await sleep(1000); // whatever the daemon does right after the 250 counts too
    clearInterval(timer);
    const after = readProcMem(d.pid);
    const huge: HugeFigures = {
      before,
      sampledMaxKiB: sampledMax,
      hwmAfterKiB: hwmReset && after ? after.hwmKiB : null,
      accepted: r.accepted,
      reply: r.reply,
      elapsedMs: r.elapsedMs,
      bytesSent: r.bytesSent,
    };
    log(`tidemail: huge message ${r.accepted ? 'accepted' : 'NOT accepted'} in ${(r.elapsedMs / 1000).toFixed(2)} s ` +
      `(${r.reply}); RSS growth sampled ${fmtMiB(sampledMax - before.rssKiB)}` +
      (huge.hwmAfterKiB !== null ? `, by VmHWM ${fmtMiB(huge.hwmAfterKiB - before.rssKiB)}` : ''));
    if (!r.accepted) problems.push(`tidemail: the ${HUGE_MB} MB message was not accepted: ${r.reply}`);
    // The daemon logs "accepted ... size=N"; N should be the un-stuffed size we generated.
    const size = /accepted .*\bsize=(\d+)/.exec(d.logTail(50))?.[1];
    if (r.accepted && size !== undefined && !nodeArgs) {
      const want = HUGE_MB * 1024 * 1024;
      checks.push(`tidemail: the ${HUGE_MB} MB message was logged with size=${size} for ${want} bytes sent before ` +
        `dot-stuffing${Number(size) === want ? ' (match)' : ''}`);
    }
    return huge;
  } catch (e) {
    problems.push(`tidemail (${label}): ${(e as Error).message}`);
    return undefined;
  } finally {
    await run.finish();
  }
}

/**
 * RSS of plain `node` after importing each runtime dependency of the package on its own (in
 * parallel child processes): where the daemon's idle RSS above plain node comes from.
 */
export async function moduleFootprints(): Promise<Array<{ name: string; rssKiB: number }>> {
  let deps: string[] = [];
  try {
    deps = Object.keys(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).dependencies ?? {});
  } catch {
    return [];
  }
  // Each child imports one module, idles 1.5 s, then prints its own VmRSS (KiB); an import that
  // fails prints nothing and is left out.
  const one = async (name: string): Promise<{ name: string; rssKiB: number } | null> => {
    const code =
      `await import(${JSON.stringify(name)});` +
      `setTimeout(async () => { const fs = await import('node:fs');` +
      ` console.log(/VmRSS:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]); }, 1500);`;
    const r = await runCommand(process.execPath, ['--input-type=module', '-e', code], { cwd: ROOT, timeoutMs: 20_000 });
    const kib = Number(r.stdout.trim());
    return r.code === 0 && kib > 0 ? { name, rssKiB: kib } : null;
  };
  const got = await Promise.all(deps.map(one));
  return got.filter((x): x is { name: string; rssKiB: number } => x !== null);
}

/** RSS of a plain `node` process doing nothing, as the reference for the idle target; its smaps into mem.nodeSmaps. */
export async function nodeBaseline(): Promise<number | undefined> {
  const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 10000)'], { stdio: 'ignore' });
  await sleep(2000);
  const m = child.pid ? readProcMem(child.pid) : null;
  mem.nodeSmaps = (child.pid ? readSmaps(child.pid) : null) ?? undefined;
  child.kill('SIGKILL');
  return m?.rssKiB;
}

/** Median latency of write(4 KiB) + fdatasync in the temp dir: the price of one durable commit. */
export function fsyncLatencyMs(): number {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-fsync-'));
  const file = path.join(dir, 'f');
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(4096, 120);
  const times: number[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      const t0 = nowMs();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      times.push(nowMs() - t0);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** `sendmail -t` against `node -e 0` (startup.ts, 10 interleaved runs each). */
export async function measureStartup(): Promise<TargetFigures['startup']> {
  const r = await runCommand(process.execPath, [path.join(ROOT, 'dist', 'test', 'bench', 'startup.js'), '--runs', '10'], { timeoutMs: 120_000 });
  const got = parseStartup(r.stdout);
  if (!got) log(`startup.js: no figures (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return got;
}

/** Per-stage CPU at c=1 (stages.ts, 1000 messages per stage); needs smtp-source. */
export async function measureStages(): Promise<TargetFigures['stages']> {
  const r = await runCommand(process.execPath, [path.join(ROOT, 'dist', 'test', 'bench', 'stages.js'), '--messages', '1000'], { timeoutMs: 600_000 });
  const got = parseStages(r.stdout);
  if (!got?.length) log(`stages.js: no figures (exit ${r.code}): ${r.stderr.trim().split('\n')[0] ?? ''}`);
  return got?.length ? got : undefined;
}
