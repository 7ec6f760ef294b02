// Benchmarks for links and local delivery (issues 4 and 5), run by run.ts after the acceptance
// figures. Each starts the real daemon through the test helpers.
//  - link-up flush: 1000 messages queued while a route is offline; time from the flag file
//    appearing (the link event) to the last of them at a local smarthost.
//  - idle offline CPU: the daemon's CPU time while a route is offline with mail waiting,
//    measured over IDLE_SECONDS and reported per minute.
//  - local delivery: messages/s delivered into Maildir (and Dovecot LMTP when installed) at c=1
//    and c=10 — each 250 means the message is already in the mailbox (deliver, then answer).

import fs from 'node:fs';
import path from 'node:path';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { haveDovecotLmtp, startDovecotLmtp } from '../helpers/dovecot-lmtp.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';
import { cpuTimeMs } from './common.js';
import { runLoad } from './load.js';

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
  lines.push('  (Postfix local delivery is not measured side by side yet: its local(8) needs a real user mailbox setup)');
  return { lines };
}

// Run alone: node dist/test/bench/links.js
if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runLinkBenches();
  console.log(r.lines.join('\n'));
  process.exit(0);
}
