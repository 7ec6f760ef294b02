// Benchmarks for links and local delivery (issues 4 and 5), run by run.ts after the acceptance
// figures. Each starts the real daemon through the test helpers.
//  - link-up flush: 1000 messages queued while a route is offline; time from the flag file
//    appearing (the link event) to the last of them at a local smarthost.
//  - idle offline CPU: the daemon's CPU time while a route is offline with mail waiting,
//    measured over IDLE_SECONDS and reported per minute.
//  - local delivery: messages/s delivered into Maildir (and Dovecot LMTP when installed) at c=1
//    and c=10 — each 250 means the message is already in the mailbox (deliver, then answer).
//    Side by side, when Postfix is installed and we are root: a private Postfix instance
//    (postfix.ts, virtualMaildir) delivering with virtual(8) into one Maildir. Postfix answers 250
//    once the message is queued and delivers afterwards, so its figure is the time from the first
//    connection until all N messages are files in the Maildir's new/ (polled).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { haveDovecotLmtp, startDovecotLmtp } from '../helpers/dovecot-lmtp.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';
import { cpuTimeMs, freePort, nowMs, sleep, waitForSmtp } from './common.js';
import { runLoad } from './load.js';
import { abortPostfixSync, findPostfix, startPostfix } from './postfix.js';

const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 60);

export interface LinkBenchResult {
  lines: string[];
}

async function linkUpFlush(lines: string[]): Promise<void> {
  const sh = await startSmarthost();
  const flag = path.join(tmpDir(), 'isp.up');
  const site = await makeSite('[log]\nlevel = "warn"');
  site.route('isp', smarthostRoute(sh.port, `online.file = "${flag}"\nmax_connections = 4`));
  const d = await startDaemon(site);
  try {
    const load = await runLoad({ host: '127.0.0.1', port: site.port, messages: 1000, size: 4096, concurrency: 10, to: 'x@remote.example' });
    const start = performance.now();
    fs.writeFileSync(flag, '');
    await waitFor('1000 delivered', () => sh.messages.length >= load.accepted, 120_000, 10);
    const ms = performance.now() - start;
    lines.push(`  link up -> ${load.accepted} queued messages delivered   ${(ms / 1000).toFixed(2)} s  (${Math.round(load.accepted / (ms / 1000))} msg/s, 4 connections)`);
  } finally {
    await d.stop();
    await sh.close();
  }
}

async function idleOfflineCpu(lines: string[]): Promise<void> {
  const site = await makeSite('[log]\nlevel = "warn"');
  site.route('isp', smarthostRoute(9, `online.interface = "tm-nonexistent0"\nonline.tcp = "127.0.0.1:9"`));
  const d = await startDaemon(site);
  try {
    await runLoad({ host: '127.0.0.1', port: site.port, messages: 50, size: 2048, concurrency: 1, to: 'x@remote.example' });
    await new Promise((r) => setTimeout(r, 2000));
    const before = cpuTimeMs(d.proc.pid!) ?? 0;
    await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000));
    const used = (cpuTimeMs(d.proc.pid!) ?? 0) - before;
    lines.push(`  idle CPU, route offline, 50 waiting   ${(used / (IDLE_SECONDS / 60)).toFixed(1)} ms per minute (measured over ${IDLE_SECONDS} s)`);
  } finally {
    await d.stop();
  }
}

async function localRate(lines: string[], label: string, localToml: string, to: string): Promise<void> {
  for (const c of [1, 10]) {
    const site = await makeSite(`[log]\nlevel = "warn"\n${localToml}`);
    const d = await startDaemon(site);
    try {
      const r = await runLoad({ host: '127.0.0.1', port: site.port, messages: 500, size: 4096, concurrency: c, to });
      lines.push(`  local delivery, ${label.padEnd(8)} c=${String(c).padEnd(3)} ${String(Math.round(r.rate)).padStart(6)} msg/s  (${r.accepted} delivered before 250, ${r.failed} failed)`);
    } finally {
      await d.stop();
    }
  }
}

/** uid/gid of `nobody` (virtual(8) refuses to deliver as root). */
function nobodyIds(): { uid: number; gid: number } {
  try {
    const uid = Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'nobody'], { encoding: 'utf8' }).trim());
    if (uid > 0 && gid > 0) return { uid, gid };
  } catch {
    // fall through
  }
  return { uid: 65534, gid: 65534 };
}

function countEntries(dir: string): number {
  try {
    return fs.readdirSync(dir).length;
  } catch {
    return 0;
  }
}

/**
 * Postfix local delivery, side by side with localRate: one private instance delivering with
 * virtual(8) into DIR/vmail/box/; for c=1 and c=10 the same runLoad as tidemail's, timed from the
 * first connection until all accepted messages are files in box/new/ (polled every 5 ms).
 */
async function postfixLocalRate(lines: string[]): Promise<void> {
  const label = 'Postfix virtual Maildir';
  const found = await findPostfix();
  if (!found.postfix) {
    lines.push(`  local delivery, ${label}: postfix not installed, skipped`);
    return;
  }
  if (process.getuid?.() !== 0) {
    lines.push(`  local delivery, ${label}: skipped, a private Postfix instance needs root`);
    return;
  }
  const tools = found.postfix;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-bench-postfix-local-'));
  fs.chmodSync(dir, 0o755); // the postfix user must reach DIR/queue
  const { uid, gid } = nobodyIds();
  const base = path.join(dir, 'vmail');
  fs.mkdirSync(base, { mode: 0o755 });
  fs.chownSync(base, uid, gid);
  const newDir = path.join(base, 'box', 'new');
  const onExit = (): void => abortPostfixSync(tools, dir);
  process.on('exit', onExit);
  try {
    const port = await freePort();
    const pf = await startPostfix(tools, dir, port, {
      virtualMaildir: { domain: 'bench.test', base, mailbox: 'box/', uid, gid },
    });
    try {
      if (!(await waitForSmtp('127.0.0.1', port, 30_000))) throw new Error(`smtpd on 127.0.0.1:${port} did not answer`);
      for (const c of [1, 10]) {
        const before = countEntries(newDir);
        const start = nowMs();
        const r = await runLoad({ host: '127.0.0.1', port, messages: 500, size: 4096, concurrency: c, to: 'box@bench.test' });
        const want = before + r.accepted;
        // give up when nothing new has arrived for 15 s (e.g. virtual(8) failing to start)
        let have = countEntries(newDir);
        let progressAt = nowMs();
        while (have < want && nowMs() - progressAt < 15_000) {
          await sleep(5);
          const now = countEntries(newDir);
          if (now > have) progressAt = nowMs();
          have = now;
        }
        const ms = nowMs() - start;
        const got = have - before;
        const rate = ms > 0 ? (got * 1000) / ms : 0;
        lines.push(`  local delivery, ${label} c=${String(c).padEnd(3)} ${String(Math.round(rate)).padStart(6)} msg/s  (time until all ${r.accepted} are in new/: ${(ms / 1000).toFixed(2)} s; ${got} delivered, ${r.failed} failed; 250s alone: ${Math.round(r.rate)} msg/s)`);
        if (got < r.accepted) lines.push(`    (only ${got} of ${r.accepted} accepted reached new/, none for 15 s; ${pf.queuedCount()} still queued)`);
      }
    } finally {
      await pf.stop();
    }
  } catch (e) {
    lines.push(`  local delivery, ${label}: FAILED ${(e as Error).message.split('\n').join(' / ')}`);
  } finally {
    process.off('exit', onExit);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runLinkBenches(): Promise<LinkBenchResult> {
  const lines: string[] = ['links and local delivery (issues 4, 5):'];
  await linkUpFlush(lines);
  await idleOfflineCpu(lines);
  const mail = tmpDir('tidemail-bench-mail-');
  fs.chmodSync(mail, 0o777);
  const aliases = writeFile(path.join(mail, 'aliases'), '');
  await localRate(lines, 'Maildir', `[local]\naliases = "${aliases}"\nmaildir = "${mail}/%u/Maildir"\nusers = { bench = "daemon" }`, 'bench@tidemail.test');
  if (haveDovecotLmtp()) {
    const dovecot = await startDovecotLmtp(['daemon']);
    try {
      await localRate(lines, 'LMTP', `[local]\naliases = "${aliases}"\ndelivery = "lmtp"\nlmtp = "127.0.0.1:${dovecot.port}"`, 'daemon@tidemail.test');
    } finally {
      await dovecot.stop();
    }
  } else lines.push('  local delivery, LMTP: dovecot-lmtpd not installed');
  await postfixLocalRate(lines);
  lines.push('  (not like for like: tidemail counts a message only once it is in the mailbox when it answers 250;');
  lines.push('   Postfix answers 250 once queued and delivers afterwards, so its figure is queue-then-deliver,');
  lines.push('   timed from the first connection until all N are files in new/)');
  return { lines };
}

// Run alone: node dist/test/bench/links.js
if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runLinkBenches();
  console.log(r.lines.join('\n'));
  process.exit(0);
}
