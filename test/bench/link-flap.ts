// Link-flap benchmark (issue 14): a smarthost behind a link that loses carrier and drops packets.
//
// Run:   npm run bench                                   (all benches; this one after the others)
//        node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]   (this one alone)
// Also:  BENCH_FLAP_MINUTES, BENCH_FLAP_SEED; run.ts takes --flap-minutes / --no-link-flap.
// Needs root, iproute2 and nft (this kernel has no sch_netem, so loss is an nftables numgen rule).
//
// Set-up: the far side is a network namespace behind a veth pair (test/helpers/netns.ts) with one
// smarthost process per subject (test/helpers/smarthost-proc.ts; port 2525 for tidemail, 2526 for
// Postfix). Link down = carrier loss: the far end goes down, ours stays admin-up (NO-CARRIER).
// While up, 20 % of the packets are dropped both ways. A seeded PRNG (mulberry32) draws the
// schedule: down 5–60 s, up 5–30 s, alternating, starting down, for M minutes (10 by default).
// Every 2 s one message (X-Tag header) goes by SMTP on loopback to each subject:
//   tidemail  the daemon (test/helpers/daemon.ts) with route online.interface = HOST_IF,
//             smarthost = FAR_IP:2525, tls none — everything else at its defaults;
//   postfix   a private instance (postfix.ts, relay) relaying to [FAR_IP]:2526 with
//             minimal_backoff_time 10s, maximal_backoff_time 60s, queue_run_delay 10s — it has no
//             link detector, so it just retries. Only when installed (and we are root).
// Both run at the same time over the same link, so they see the same flaps.
// After the schedule the link comes up without loss and we wait (at most 120 s) for the queues
// to drain, then count.
//
// Figures per subject:
//   injected / accepted (250 after DATA) / delivered / lost (accepted, never arrived) /
//   duplicates (arrivals of an X-Tag beyond the first);
//   connection attempts while down: TCP SYNs (without ACK; retransmitted SYNs count) leaving
//     HOST_IF to the subject's far port, from an nft counter in our namespace read just before
//     each carrier-down and just before the carrier-up that ends it (the far side cannot see them);
//   link-up → delivered: for each message that was still waiting when a link-up came, the time
//     from the first such link-up to its arrival (median / p90 / max);
//   missed windows: (message, up-window) pairs where a window of >= 10 s ended with the message
//     still waiting although it was queued before the window began; and up-windows of 8–17 s
//     that began with mail waiting and in which nothing at all arrived.
// Writes the "Link flaps" section of test/bench/RESULTS.md (between its markers; text after the
// end marker is kept), unless --no-write.
//
// This file runs the schedule; link-flap-schedule.ts draws it, link-flap-far-side.ts holds the
// far end (smarthosts in the namespace, SYN counters), link-flap-subjects.ts the two subjects,
// link-flap-report.ts the figures, the table and the RESULTS.md section.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { canUseNetns, canUseNft, carrierDown, carrierUp, createVethNamespace, setLoss } from '../helpers/netns.js';
import { cleanupTmp } from '../helpers/tmp.js';
import { sleep } from './common.js';
import { SMARTHOST_PROC, SynCounters } from './link-flap-far-side.js';
import { figures, putLinkFlapSection, report, resultsPath, SECTION_HEAD, type Figures, type LinkFlapResult, type Window } from './link-flap-report.js';
import { DOWN_S, DRAIN_TIMEOUT_MS, INJECT_EVERY_MS, LOSS_PERCENT, makeSchedule, UP_S, type Phase } from './link-flap-schedule.js';
import { inject, startPostfixSubject, startTidemailSubject, waiting, type Subject, type Undo } from './link-flap-subjects.js';

// run.ts reads and rewrites the section through these.
export { linkFlapSection, putLinkFlapSection, type LinkFlapResult } from './link-flap-report.js';

export interface LinkFlapOptions {
  minutes: number;
  seed: number;
  log?: (msg: string) => void;
}

export async function runLinkFlapBench(opts: LinkFlapOptions): Promise<LinkFlapResult> {
  const log = opts.log ?? ((m: string) => process.stderr.write(`[link-flap ${new Date().toISOString().slice(11, 19)}] ${m}\n`));
  const date = new Date().toISOString();
  const cpus = os.cpus();
  const machine = `${cpus.length} core(s) ${cpus[0]?.model.trim() ?? ''}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
    `${os.type()} ${os.release()}, node ${process.version}`;
  const phases = makeSchedule(opts.seed, opts.minutes);
  const downs = phases.filter((p) => !p.up);
  const upsP = phases.filter((p) => p.up);
  const sum = (ps: Phase[]): number => ps.reduce((a, p) => a + p.lenS, 0);
  const schedule = `seed ${opts.seed}, ${opts.minutes} min: ${downs.length} carrier-down periods (${DOWN_S[0]}–${DOWN_S[1]} s, ` +
    `${sum(downs)} s in all), ${upsP.length} up periods (${UP_S[0]}–${UP_S[1]} s, ${sum(upsP)} s, ${LOSS_PERCENT} % loss both ways), ` +
    `starting down; one message every ${INJECT_EVERY_MS / 1000} s to each server; then link up without loss, ` +
    `drain for at most ${DRAIN_TIMEOUT_MS / 1000} s`;
  const how = `node dist/test/bench/link-flap.js --minutes ${opts.minutes} --seed ${opts.seed}`;
  const head = [`Link flaps (issue 14; test/bench/link-flap.ts), ${date}`, `machine: ${machine}`, `schedule: ${schedule}`];
  const skipped = (why: string): LinkFlapResult => ({
    lines: [...head, `skipped: ${why}`],
    markdown: [`Run ${date} on ${machine}: skipped: ${why}`, ''].join('\n'),
  });

  if (!canUseNetns()) return skipped('needs root and iproute2');
  if (!fs.existsSync(SMARTHOST_PROC)) return skipped(`${SMARTHOST_PROC} missing (build first)`);

  const v = createVethNamespace('lf', 79);
  const subjects: Subject[] = [];
  const undo: Undo = [() => v.teardown()];
  const undoAll = (): void => {
    while (undo.length) {
      try {
        undo.pop()!();
      } catch {
        // best effort
      }
    }
  };
  process.on('exit', undoAll); // a crash or Ctrl-C must not leave the namespace or nft tables behind
  const notes: string[] = [];
  try {
    if (!canUseNft(v)) return skipped('nft not usable in the namespace (install nftables)');
    const t0 = performance.now();
    const clock = (): number => performance.now() - t0;
    const syn = new SynCounters(v, [2525, 2526]);
    undo.push(() => syn.remove());

    const { subject: tidemail, daemon } = await startTidemailSubject(v, clock, undo);
    subjects.push(tidemail);
    const postfix = await startPostfixSubject(v, clock, undo, notes);
    if (postfix) subjects.push(postfix);

    log(`${v.hostIf} <-> ${v.nsIf} (${v.ns}), far side ${v.farIp}; ${subjects.map((s) => `${s.label} on 127.0.0.1:${s.port}`).join(', ')}`);
    log(`schedule: ${schedule}`);

    // The schedule starts down: take the link down first and let the daemon notice, so the
    // first messages do not race the very first carrier loss.
    carrierDown(v);
    await daemon.waitForLog(/link down/, 10_000).catch(() => notes.push('tidemail logged no "link down" at the start'));

    // Drive the schedule against absolute deadlines (no drift) and inject every 2 s meanwhile.
    const start = clock();
    const ups: number[] = [];
    const windows: Window[] = [];
    let n = 0;
    let injecting = true;
    const injector = (async () => {
      for (; injecting; n++) {
        for (const s of subjects) inject(s, n, clock);
        const next = start + (n + 1) * INJECT_EVERY_MS;
        while (injecting && clock() < next) await sleep(Math.min(100, next - clock()));
      }
    })();
    const before = new Map<string, number>();
    let upSince: number | null = null;
    const goDown = (): void => {
      for (const s of subjects) before.set(s.name, syn.sent(s.far.port)); // before: the race at link-down counts
      carrierDown(v);
      if (upSince !== null) windows.push({ start: upSince, end: clock() });
      upSince = null;
    };
    const goUp = (loss: number): void => {
      for (const s of subjects) s.attemptsWhileDown += syn.sent(s.far.port) - (before.get(s.name) ?? 0);
      setLoss(v, loss); // loss first: no loss-free instant at link-up
      carrierUp(v);
      upSince = clock();
      ups.push(upSince);
    };
    for (const ph of phases) {
      const at = start + ph.startS * 1000;
      while (clock() < at) await sleep(Math.min(200, at - clock()));
      if (ph.up) goUp(LOSS_PERCENT);
      else goDown();
      log(`${ph.up ? 'up  ' : 'down'} ${String(ph.lenS).padStart(2)} s  (t=${ph.startS} s)` +
        subjects.map((s) => `  ${s.name} waiting ${waiting(s)}`).join(''));
    }
    const end = start + (phases.at(-1)!.startS + phases.at(-1)!.lenS) * 1000;
    while (clock() < end) await sleep(Math.min(200, end - clock()));
    injecting = false;
    await injector;
    // End of the schedule: close the last window, link up without loss, let the queues drain.
    if (upSince !== null) {
      windows.push({ start: upSince, end: clock() });
      setLoss(v, 0);
    } else goUp(0);
    const drainStart = clock();
    log(`schedule over; link up without loss, draining (at most ${DRAIN_TIMEOUT_MS / 1000} s)`);
    await Promise.all(subjects.flatMap((s) => [...s.inflight]));
    const drained = new Map<string, number | null>(subjects.map((s) => [s.name, null]));
    while (clock() - drainStart < DRAIN_TIMEOUT_MS && [...drained.values()].some((x) => x === null)) {
      for (const s of subjects) if (drained.get(s.name) === null && waiting(s) === 0) drained.set(s.name, clock() - drainStart);
      await sleep(100);
    }
    const all: Array<[Subject, Figures]> = [];
    for (const s of subjects) {
      all.push([s, figures(s, ups, windows, syn.arrived(s.far.port), await s.queued(), drained.get(s.name) ?? null)]);
    }
    log('stopping');
    for (const s of subjects) await s.stop();
    const dlog = daemon.logs();
    // BENCH_FLAP_DEBUG=DIR keeps the daemon's log and every message's story (reply, arrivals,
    // link-ups) for a look at duplicates and the slow tail.
    const debugDir = process.env.BENCH_FLAP_DEBUG;
    if (debugDir) {
      fs.mkdirSync(debugDir, { recursive: true });
      fs.writeFileSync(path.join(debugDir, 'tidemail.log'), dlog);
      const story = subjects.map((s) => ({ subject: s.name, msgs: [...s.msgs.values()].map((m) => ({ ...m, arrivals: s.far.arrivals.get(m.tag) ?? [] })) }));
      fs.writeFileSync(path.join(debugDir, 'messages.json'), JSON.stringify({ ups, windows, story }, null, 1));
    }
    const count = (re: RegExp): number => dlog.split('\n').filter((l) => re.test(l)).length;
    notes.push(`tidemail log: ${count(/link down/)} "link down", ${count(/link up/)} "link up", ` +
      `${count(/ETIMEDOUT|[Tt]imeout|timed out/)} timeout lines, ${count(/interrupted/)} "interrupted" lines`);
    return report(head, how, machine, date, schedule, all, notes);
  } finally {
    for (const s of subjects) await Promise.race([Promise.all([...s.inflight]), sleep(5000)]);
    undoAll();
    process.off('exit', undoAll);
    cleanupTmp();
  }
}

// Alone: node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]

if (import.meta.url === `file://${process.argv[1]}`) {
  const argv = process.argv.slice(2);
  const opt = (flag: string, env: string, dflt: string): string => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : (process.env[env] ?? dflt);
  };
  const minutes = Number(opt('--minutes', 'BENCH_FLAP_MINUTES', '10'));
  const seed = Number(opt('--seed', 'BENCH_FLAP_SEED', '14'));
  if (!(minutes > 0) || !Number.isInteger(seed)) {
    console.error('usage: node dist/test/bench/link-flap.js [--minutes M] [--seed S] [--no-write]');
    process.exit(64);
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130)); // runs the exit cleanup
  const r = await runLinkFlapBench({ minutes, seed });
  console.log('\n' + r.lines.join('\n'));
  if (!argv.includes('--no-write')) {
    const file = resultsPath();
    const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# tidemail benchmark results\n';
    fs.writeFileSync(file, putLinkFlapSection(old, r.markdown));
    console.error(`wrote the "${SECTION_HEAD.slice(3)}" section of ${file}`);
  }
  process.exit(0);
}
