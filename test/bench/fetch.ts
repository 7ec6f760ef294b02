// Benchmark for POP3 fetching (issue 7): a private Dovecot on loopback, and
//  - 1000 messages of 4 KiB: wall time of `tidemail fetch` (keep = false) until all are
//    committed to the queue and deleted on the server → messages/s;
//  - one 50 MB message: the same, plus the daemon's RSS growth (VmHWM after − VmRSS before).
// Side by side, when fetchmail is installed: fetchmail polls the same mailbox and hands every
// message by SMTP to the same tidemail daemon (its usual setup, `smtphost`), which queues it
// (fsync) before answering 250; its RSS is sampled every 10 ms. Both end at "in tidemail's
// queue, deleted on the server". The recipient is remote on a route whose smarthost refuses
// connections, so nothing is delivered (or delivered before the 250) during the measurement.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';
import { nowMs, readProcMem, resetPeakRss, sleep, which } from './common.js';

export interface FetchBenchResult {
  lines: string[];
}

const SMALL = Number(process.env.BENCH_FETCH_MESSAGES ?? 1000);
/** BENCH_FETCHMAIL=0 leaves fetchmail out even when installed. */
const WITH_FETCHMAIL = process.env.BENCH_FETCHMAIL !== '0';
const SMALL_SIZE = 4096;
const HUGE_MB = 50;
const RCPT = 'x@remote.example';

function smallMessage(i: number): string {
  const head = `From: bench@remote.example\r\nTo: ${RCPT}\r\nSubject: bench ${i}\r\nMessage-ID: <bench${i}.${Date.now()}@remote.example>\r\n\r\n`;
  const line = 'z'.repeat(70) + '\r\n';
  return head + line.repeat(Math.ceil((SMALL_SIZE - head.length) / line.length));
}

/** A HUGE_MB message written to a file in 1 MiB blocks (never held in memory). */
function hugeFile(dir: string): string {
  const file = path.join(dir, `huge-${Date.now()}.eml`);
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, `From: bench@remote.example\r\nTo: ${RCPT}\r\nSubject: huge\r\n\r\n`);
  const block = Buffer.from(('y'.repeat(76) + '\r\n').repeat(13_108));
  for (let i = 0; i < HUGE_MB; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  return file;
}

interface Run {
  ms: number;
  rssGrowthKiB?: number;
  ok: boolean;
  detail: string;
}

async function tidemailFetch(site: TestSite, pid: number): Promise<Run> {
  const before = readProcMem(pid);
  resetPeakRss(pid);
  const t = nowMs();
  const r = await runCli(['fetch', '--config', site.configPath], { timeoutMs: 600_000 });
  const ms = nowMs() - t;
  const after = readProcMem(pid);
  const growth = before && after ? after.hwmKiB - before.rssKiB : undefined;
  return { ms, rssGrowthKiB: growth, ok: r.code === 0, detail: r.stdout.trim() || r.stderr.trim() };
}

/** fetchmail delivering by SMTP to smtpPort, or with `mda` (a shell command) when given. */
async function fetchmailRun(bin: string, dc: Dovecot, smtpPort: number, mda?: string): Promise<Run> {
  const home = tmpDir('tidemail-bench-fetchmail-');
  const rc = writeFile(
    path.join(home, 'fetchmailrc'),
    `set no bouncemail\npoll 127.0.0.1 with proto POP3 port ${dc.port} auth password\n  user "bench" there with password "bench" is "bench" here\n  options nokeep fetchall sslproto '' ${mda ? `mda "${mda}"` : `smtphost "127.0.0.1/${smtpPort}" smtpname "${RCPT}"`}\n`,
    0o600,
  );
  const t = nowMs();
  const p = spawn(bin, ['-f', rc, '--nosyslog'], { env: { ...process.env, FETCHMAILHOME: home, HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  let base: number | undefined;
  let peak = 0;
  const sampler = setInterval(() => {
    const m = p.pid ? readProcMem(p.pid) : null;
    if (!m) return;
    base ??= m.rssKiB;
    peak = Math.max(peak, m.hwmKiB);
  }, 10);
  const code = await new Promise<number | null>((r) => p.on('exit', r));
  clearInterval(sampler);
  const ms = nowMs() - t;
  // fetchmail exits 0 when mail was fetched, 1 when there was none.
  return { ms, rssGrowthKiB: base === undefined ? undefined : peak - base, ok: code === 0, detail: `exit ${code}${code ? `: ${out.trim().split('\n').slice(-2).join(' / ')}` : ''}` };
}

const rate = (n: number, ms: number) => `${Math.round(n / (ms / 1000))} msg/s`;
const mib = (kib?: number) => (kib === undefined ? 'n/a' : `${(kib / 1024).toFixed(1)} MB`);

export async function runFetchBenches(): Promise<FetchBenchResult> {
  const lines: string[] = ['POP3 fetch from a local Dovecot (issue 7; test/bench/fetch.ts):'];
  if (!haveDovecot()) {
    lines.push('  skipped: dovecot-pop3d is not installed');
    return { lines };
  }
  const dc = await startDovecot({ users: { bench: 'bench' } });
  const site = await makeSite('[log]\nlevel = "warn"', { smtpToml: 'max_message_size = "200M"' });
  writeSecret(path.join(site.dir, 'secrets', 'pop'), 'bench\n');
  site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dc.port}"\ntls = "none"\nuser = "bench"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "${RCPT}"\nkeep = false\ninterval = "1h"\n`);
  const d = await startDaemon(site);
  const scratch = tmpDir('tidemail-bench-fetch-');
  const fetchmail = WITH_FETCHMAIL ? which('fetchmail') : null;
  try {
    await sleep(1000); // the start-up fetch of the empty mailbox
    const fill = () => {
      for (let i = 0; i < SMALL; i++) dc.deliver('bench', smallMessage(i));
    };

    fill();
    const small = await tidemailFetch(site, d.proc.pid!);
    lines.push(`  tidemail fetch, ${SMALL} × 4 KiB       ${(small.ms / 1000).toFixed(2)} s  ${rate(SMALL, small.ms)}${small.ok ? '' : `  FAILED: ${small.detail}`}  (${small.detail.split('\n')[0]})`);
    // Twice: the first large message also grows the heap to its working size (the spool's
    // SQL text per 64 KiB chunk); the second shows what one more costs.
    for (const which of ['first', 'second']) {
      dc.deliverFile('bench', hugeFile(scratch));
      const huge = await tidemailFetch(site, d.proc.pid!);
      lines.push(`  tidemail fetch, one ${HUGE_MB} MB message (${which})  ${(huge.ms / 1000).toFixed(2)} s  daemon RSS growth ${mib(huge.rssGrowthKiB)}${huge.ok ? '' : `  FAILED: ${huge.detail}`}`);
    }

    if (!fetchmail) {
      lines.push('  fetchmail: not installed (apt-get install fetchmail), no comparison');
    } else {
      fill();
      const fs1 = await fetchmailRun(fetchmail, dc, site.port);
      lines.push(`  fetchmail → SMTP, ${SMALL} × 4 KiB     ${(fs1.ms / 1000).toFixed(2)} s  ${rate(SMALL, fs1.ms)}${fs1.ok ? '' : `  (${fs1.detail})`}`);
      fill();
      const viaMda = await fetchmailRun(fetchmail, dc, site.port, 'cat > /dev/null');
      lines.push(`  fetchmail → mda "cat > /dev/null", ${SMALL} × 4 KiB  ${(viaMda.ms / 1000).toFixed(2)} s  ${rate(SMALL, viaMda.ms)}  (POP3 side alone, nothing stored)${viaMda.ok ? '' : `  (${viaMda.detail})`}`);
      dc.deliverFile('bench', hugeFile(scratch));
      const before = readProcMem(d.proc.pid!);
      resetPeakRss(d.proc.pid!);
      const fs2 = await fetchmailRun(fetchmail, dc, site.port);
      const after = readProcMem(d.proc.pid!);
      lines.push(`  fetchmail → SMTP, one ${HUGE_MB} MB message ${(fs2.ms / 1000).toFixed(2)} s  fetchmail RSS growth ${mib(fs2.rssGrowthKiB)}, receiving daemon ${mib(before && after ? after.hwmKiB - before.rssKiB : undefined)}${fs2.ok ? '' : `  (${fs2.detail})`}`);
      lines.push(`  (left on the server afterwards: ${dc.mailbox('bench').length})`);
    }
    lines.push('  (both end with every message committed (fsync) to tidemail\'s queue and deleted on the server;');
    lines.push('   tidemail fetch includes starting the CLI, fetchmail its own start; one POP3 session each)');
  } finally {
    await d.stop();
    await dc.stop();
  }
  return { lines };
}

// Run alone: node dist/test/bench/fetch.js
if (import.meta.url === `file://${process.argv[1]}`) {
  const r = await runFetchBenches();
  console.log(r.lines.join('\n'));
  process.exit(0);
}
