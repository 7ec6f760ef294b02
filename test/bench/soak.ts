// Memory soak (issue 17): the daemon with the default config plus one smarthost route, fed a
// steady trickle (RATE messages/s, one connection per message, as cron and LAN devices send) that
// it relays to a local smarthost, with the route's link taken down and up every FLAP_EVERY_S
// (`tidemail link down/up`, mail waits then flushes). VmRSS is sampled every minute; the curve is
// written as a Markdown section to OUT (default test/bench/SOAK.md beside this file's source),
// rewritten after each sample, so a cut-short run still leaves its curve.
//
//   node dist/test/bench/soak.js [--minutes 60] [--rate 5] [--flap-every 300] [--out FILE]

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { readProcMem } from './common.js';
import { runLoad } from './load.js';

const argv = process.argv.slice(2);
const opt = (flag: string, dflt: string): string => {
  const i = argv.indexOf(flag);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : dflt;
};
const MINUTES = Number(opt('--minutes', '60'));
const RATE = Number(opt('--rate', '5'));
const FLAP_EVERY_S = Number(opt('--flap-every', '300'));
const FLAP_DOWN_S = 60;
const SRC_DIR = path.resolve(fileURLToPath(import.meta.url), '../../../../test/bench');
const OUT = opt('--out', path.join(SRC_DIR, 'SOAK.md'));

interface Sample {
  minute: number;
  rssKiB: number;
  anonKiB: number;
  /** the privsep helper's (root, local delivery) RSS, and the daemon's RSS + the helpers' USS */
  helperRssKiB: number;
  pairKiB: number;
  accepted: number;
  delivered: number;
}

/** Pids of the daemon's child processes (the privsep helper; MDA runs while they last). */
function childPids(pid: number): number[] {
  try {
    return fs
      .readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * USS from /proc/PID/smaps_rollup (KiB): the pages only this process maps. PSS would divide
 * node's binary pages among every node process on the machine, so it depends on what else runs.
 */
function ussKiB(pid: number): number {
  try {
    const text = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
    return field('Private_Clean') + field('Private_Dirty');
  } catch {
    return NaN;
  }
}

function anonKiB(pid: number): number {
  try {
    return Number(/^RssAnon:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}

function write(samples: Sample[], started: Date, done: boolean, extra: string[]): void {
  const mb = (k: number) => (k / 1024).toFixed(1);
  const first = samples[0];
  const last = samples.at(-1);
  const lines = [
    '## Soak',
    '',
    `${started.toISOString().slice(0, 10)}, \`node dist/test/bench/soak.js --minutes ${MINUTES} --rate ${RATE}\`${done ? '' : ' (still running when written)'}: ` +
      `the daemon (default config + one smarthost route to a local test smarthost, log level info) receives ${RATE} msg/s of 4 KiB, ` +
      `one connection per message, and relays them; the link goes down for ${FLAP_DOWN_S} s every ${FLAP_EVERY_S} s (\`tidemail link down/up\`). ` +
      'RSS = VmRSS, anon = RssAnon (the heap; the rest is the node binary and libraries mapped from disk), every minute; ' +
      'helper = RSS of the privsep helper (the root process for local delivery, a second node); pair = the daemon\'s RSS + the helper\'s ' +
      'private pages (USS): what the two cost the machine together, node\'s shared binary pages counted once.',
    '',
    '```',
    ' min   RSS MB  anon MB  helper MB  pair MB  accepted  delivered',
    ...samples.map(
      (s) =>
        `${String(s.minute).padStart(4)}  ${mb(s.rssKiB).padStart(7)}  ${mb(s.anonKiB).padStart(7)}  ${mb(s.helperRssKiB).padStart(9)}  ${mb(s.pairKiB).padStart(7)}  ` +
        `${String(s.accepted).padStart(8)}  ${String(s.delivered).padStart(9)}`,
    ),
    '```',
    '',
  ];
  if (first && last && samples.length > 2) {
    const later = samples.slice(Math.min(5, samples.length - 1));
    const min = Math.min(...later.map((s) => s.rssKiB));
    const max = Math.max(...later.map((s) => s.rssKiB));
    const pair = later.map((s) => s.pairKiB);
    lines.push(
      `From minute ${later[0]!.minute} on, RSS stayed between ${mb(min)} and ${mb(max)} MB (growth ${mb(last.rssKiB - later[0]!.rssKiB)} MB from minute ${later[0]!.minute} to ${last.minute}); ` +
        `daemon + helper between ${mb(Math.min(...pair))} and ${mb(Math.max(...pair))} MB.`,
      '',
    );
  }
  lines.push(...extra);
  fs.writeFileSync(OUT, lines.join('\n') + '\n');
}

async function main(): Promise<void> {
  const started = new Date();
  const sh = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  const pid = d.proc.pid!;
  const samples: Sample[] = [];
  let accepted = 0;
  let failed = 0;
  let sending = true;
  const sample = (minute: number) => {
    const m = readProcMem(pid);
    const children = childPids(pid);
    const helperRssKiB = children.reduce((sum, c) => sum + (readProcMem(c)?.rssKiB ?? 0), 0);
    const pairKiB = (m?.rssKiB ?? NaN) + children.reduce((sum, c) => sum + ussKiB(c), 0);
    if (m) samples.push({ minute, rssKiB: m.rssKiB, anonKiB: anonKiB(pid), helperRssKiB, pairKiB, accepted, delivered: sh.messages.length });
    write(samples, started, false, []);
    process.stderr.write(`[soak] min ${minute} rss ${m ? (m.rssKiB / 1024).toFixed(1) : '?'} MB daemon+helper ${(pairKiB / 1024).toFixed(1)} MB accepted ${accepted} delivered ${sh.messages.length}\n`);
  };
  // The trickle: one message per 1/RATE s, each on its own connection, never more than 20 at once.
  let inFlight = 0;
  const t0 = Date.now();
  let sent = 0;
  const trickle = (async () => {
    while (sending) {
      const due = t0 + (sent * 1000) / RATE;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (inFlight >= 20) {
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      sent++;
      inFlight++;
      void runLoad({ host: '127.0.0.1', port: site.port, messages: 1, size: 4096, concurrency: 1, to: `soak${sent % 7}@remote.example` })
        .then((r) => ((accepted += r.accepted), (failed += r.failed)))
        .catch(() => failed++)
        .finally(() => inFlight--);
    }
  })();
  const flaps = (async () => {
    while (sending) {
      await new Promise((r) => setTimeout(r, (FLAP_EVERY_S - FLAP_DOWN_S) * 1000));
      if (!sending) break;
      await runCli(['link', 'down', 'isp', '--config', site.configPath]).catch(() => undefined);
      await new Promise((r) => setTimeout(r, FLAP_DOWN_S * 1000));
      await runCli(['link', 'up', 'isp', '--config', site.configPath]).catch(() => undefined);
    }
  })();
  sample(0);
  for (let minute = 1; minute <= MINUTES; minute++) {
    await new Promise((r) => setTimeout(r, t0 + minute * 60_000 - Date.now()));
    sample(minute);
  }
  sending = false;
  await trickle;
  await runCli(['link', 'up', 'isp', '--config', site.configPath]).catch(() => undefined);
  const deadline = Date.now() + 120_000;
  while (sh.messages.length < accepted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  // Each message has its own Message-ID (load.ts): a count that differs says whether mail was
  // lost or delivered twice, and the daemon's log is kept beside the report to say why.
  const perId = new Map<string, number>();
  for (const m of sh.messages) {
    const id = /^Message-ID: *<([^>]*)>/im.exec(m.raw.toString('latin1'))?.[1] ?? '(none)';
    perId.set(id, (perId.get(id) ?? 0) + 1);
  }
  const twice = [...perId].filter(([, n]) => n > 1);
  const verdict =
    perId.size === accepted && twice.length === 0
      ? 'all of them, each once'
      : `${perId.size} different Message-IDs, ${twice.length} delivered more than once (${twice.slice(0, 5).map(([id, n]) => `${id} x${n}`).join(', ')}); daemon log: ${OUT}.daemon.log`;
  if (verdict !== 'all of them, each once') fs.writeFileSync(`${OUT}.daemon.log`, d.logs());
  const extra = [`Accepted ${accepted}, refused or failed ${failed}, delivered to the smarthost ${sh.messages.length}: ${verdict}.`, ''];
  write(samples, started, true, extra);
  void flaps;
  await d.stop();
  await sh.close();
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
