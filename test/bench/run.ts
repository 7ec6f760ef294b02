// tidemail benchmark: `npm run bench` (= tsc -p . && node packaging/bundle.mjs && node dist/test/bench/run.js).
//
// Measures messages/s accepted into the durable queue at several concurrencies, side by side for
//   floor     a raw SMTP sink in its own node process that stores nothing (sink.ts); beside it
//             floor+fsync (one fdatasync per message), engine (our SMTP engine storing nothing,
//             stages.ts --serve) and engine+fsync: the Node, engine and disk floors of this run
//   tidemail  the daemon (node bin/tidemail.js daemon: dist/bundle, or dist/src when tsc ran
//             after the bundle) with a private config
//   postfix   a private Postfix instance holding all mail in its queue (postfix.ts), if installed
// each driven by smtp-source (Postfix's load client, when installed) and by the Node generator
// (load.ts, which pipelines). All three run at the same time and take turns, run by run. Then the
// daemon's memory: idle RSS, peak RSS over the load, and RSS growth while a fresh daemon receives
// one 50 MB message. Also recorded: CPU use of server, client and the rest of the machine, and
// whether each queue holds exactly the messages that were accepted. Prints a report and writes
// test/bench/RESULTS.md.
//
// Options (flags or environment):
//   --messages N     BENCH_MESSAGES     messages per run               (2000)
//   --size BYTES     BENCH_SIZE         bytes per message              (4096)
//   --concurrency L  BENCH_CONCURRENCY  comma list of sessions         (1,10,50)
//   --repeat K       BENCH_REPEAT       runs per cell; the median is kept (3)
//   --huge-mb MB     BENCH_HUGE_MB      size of the big message        (50)
//   --only LIST      BENCH_ONLY         subset of floor,tidemail,postfix
//   --client LIST    BENCH_CLIENT       subset of smtp-source,smtp-source-1,node (all when available;
//                                       smtp-source-1 = one connection per message, no -d)
//   --no-write                          do not write RESULTS.md
//   --keep                              keep temp dirs (daemon logs, Postfix log) for inspection
//   --no-links       BENCH_LINKS=0      skip links.ts (link-up flush, idle CPU, local delivery)
//   --no-link-flap   BENCH_LINK_FLAP=0  skip link-flap.ts (issue 14; needs root and nft)
//   --flap-minutes M BENCH_FLAP_MINUTES length of the link-flap schedule  (10)
//   --flap-seed S    BENCH_FLAP_SEED    its PRNG seed                     (14)
//   BENCH_DAEMON_NODE_ARGS="..."        extra node options for the daemon only (V8 experiments)
//   BENCH_TARGETS_EXTRA=0               skip startup.ts and stages.ts (the issue-17 block's
//                                       sendmail and per-stage figures)
// The link-flap figures go into their own "Link flaps" section of RESULTS.md (link-flap.ts); when
// that bench is skipped, the section of the previous RESULTS.md is kept as it was.
//
// This file is the order of the run (main) and the writing of RESULTS.md; the parts are
// run-context.ts (options, log, cleanup, collected results), run-subjects.ts (floor, private
// Postfix, daemon), run-measure.ts (the client runners), run-probes.ts (memory, fsync, start-up
// and per-stage figures) and run-report.ts (tables, notes, the targets block's figures).

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { nowMs } from './common.js';
import { findPostfix } from './postfix.js';
import { cleanupTmp } from '../helpers/tmp.js';
import { runLinkBenches } from './links.js';
import { runCheckBenches } from './checks.js';
import { linkFlapSection, putLinkFlapSection, runLinkFlapBench } from './link-flap.js';
import { targetLines, type TargetFigures } from './targets.js';
import { daemonEntry, daemonNodeArgs, shebangEnv, shebangNodeArgs } from './tidemail.js';
import {
  FLAP_MINUTES, FLAP_SEED, HUGE_MB, KEEP, LINKS, LINK_FLAP, ONLY, ROOT,
  TARGET_HUGE_GROWTH_MIB, TARGET_IDLE_MIB, TARGET_RATIO, WRITE,
  cleanupNow, log, mem, notes,
} from './run-context.js';
import { measureAll } from './run-measure.js';
import { benchHugeMessage, fsyncLatencyMs, measureStages, measureStartup, moduleFootprints, nodeBaseline } from './run-probes.js';
import { limitNotes, report, targetFigures } from './run-report.js';
import { startFloors, startPostfixSubject, startTidemailSubject, type Subject } from './run-subjects.js';

// Cleanup on exit / Ctrl-C (run-context.ts): children and the private Postfix must not outlive
// the bench. Registered here, after every import, as before the split.
process.on('exit', cleanupNow);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: cleaning up`);
    cleanupNow();
    process.exit(130);
  });
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  const t0 = nowMs();
  const cpus = os.cpus();
  const { postfix, smtpSource } = await findPostfix();
  const fsyncMs = fsyncLatencyMs();
  const machine = [
    `tidemail benchmark, ${new Date().toISOString()}`,
    `machine: ${cpus.length} core(s) ${cpus[0]?.model.trim() ?? ''}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB RAM, ` +
      `${os.type()} ${os.release()}, node ${process.version}` +
      (postfix ? `, postfix ${postfix.version}` : ', postfix not installed') +
      `; load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `clients: ${smtpSource ? `smtp-source (${smtpSource})` : 'smtp-source not installed'}; test/bench/load.ts`,
  ];
  const entry = daemonEntry(ROOT);
  const deployedArgs = entry ? shebangNodeArgs(entry) : [];
  const daemonArgs = [...deployedArgs, ...daemonNodeArgs()];
  if (entry) {
    const envWords = Object.entries(shebangEnv(entry)).map(([k, v]) => `${k}=${v} `).join('');
    machine.push(`daemon: ${envWords}node ${[...daemonArgs, path.relative(ROOT, entry)].join(' ')} daemon --config ...` +
      (deployedArgs.length ? ' (options from the launcher\'s shebang' +
        (daemonNodeArgs().length ? ' and BENCH_DAEMON_NODE_ARGS)' : ')') : ''));
  }
  log(machine.join(' | '));
  if (!smtpSource) notes.push('smtp-source not found: only the Node load generator was used.');

  [mem.nodeBaselineKiB, mem.modules] = await Promise.all([nodeBaseline(), moduleFootprints()]);
  // Start every server first, then measure them taking turns; stop them all; then the big message.
  const subjects: Subject[] = [];
  try {
    if (ONLY.has('floor')) subjects.push(...(await startFloors()));
    if (ONLY.has('tidemail')) {
      const t = await startTidemailSubject();
      if (t) subjects.push(t);
    }
    if (ONLY.has('postfix')) {
      const p = await startPostfixSubject(postfix);
      if (p) subjects.push(p);
    }
    await measureAll(subjects, smtpSource);
  } finally {
    for (const s of subjects) await s.stop();
  }
  if (ONLY.has('tidemail')) {
    mem.huge = await benchHugeMessage();
    // Experiment: repeat with small V8 semi-spaces (young generation; up to 16 MB each by
    // default on 64-bit). If the growth drops a lot, it is short-lived garbage rather than
    // buffered message data. Skipped when the daemon already runs with a semi-space setting.
    if (mem.huge && !daemonArgs.some((a) => a.startsWith('--max-semi-space-size'))) {
      const nodeArgs = ['--max-semi-space-size=2'];
      const figures = await benchHugeMessage(nodeArgs);
      if (figures) mem.hugeExperiment = { nodeArgs, figures };
    }
  }

  const lines = report(machine, limitNotes(cpus.length, fsyncMs));
  // For the issue-17 block at the end: this run's start-up and per-stage figures.
  const extra: Pick<TargetFigures, 'stages' | 'startup'> = {};
  if (daemonEntry(ROOT) && process.env.BENCH_TARGETS_EXTRA !== '0') {
    log('sendmail -t start-up (test/bench/startup.ts)');
    const startup = await measureStartup();
    if (startup) extra.startup = startup;
    if (smtpSource) {
      log('per-stage cost (test/bench/stages.ts)');
      const stages = await measureStages();
      if (stages) extra.stages = stages;
    }
  }

  // Links and local delivery (test/bench/links.ts, issues 4 and 5), after the acceptance figures.
  if (LINKS && daemonEntry(ROOT)) {
    log('links and local delivery (test/bench/links.ts)');
    try {
      lines.push('', ...(await runLinkBenches()).lines);
      lines.push('', ...(await (await import('./fetch.js')).runFetchBenches()).lines);
    } catch (e) {
      lines.push('', `links and local delivery: FAILED: ${(e as Error).message.split('\n')[0]}`);
      log(`links: FAILED ${(e as Error).message}`);
    } finally {
      if (!KEEP) cleanupTmp(); // the temp dirs the test helpers made for it
    }
  }
  if (daemonEntry(ROOT) && process.env.BENCH_CHECKS !== '0') {
    log('checks (test/bench/checks.ts)');
    try {
      lines.push('', ...(await runCheckBenches()).lines);
    } catch (e) {
      lines.push('', `checks: FAILED: ${(e as Error).message.split('\n')[0]}`);
    } finally {
      if (!KEEP) cleanupTmp();
    }
  }
  // Link flaps (issue 14): ten minutes of carrier loss and packet loss; its own RESULTS section.
  let flapMarkdown: string | null = null;
  if (LINK_FLAP && daemonEntry(ROOT)) {
    log(`link flaps (test/bench/link-flap.ts, ${FLAP_MINUTES} min, seed ${FLAP_SEED})`);
    try {
      const r = await runLinkFlapBench({ minutes: FLAP_MINUTES, seed: FLAP_SEED, log: (m) => log(`link-flap: ${m}`) });
      lines.push('', ...r.lines);
      flapMarkdown = r.markdown;
    } catch (e) {
      lines.push('', `link flaps: FAILED: ${(e as Error).message.split('\n')[0]}`);
      log(`link flaps: FAILED ${(e as Error).message}`);
    }
  }
  lines.push('', ...targetLines(targetFigures(cpus.length, fsyncMs, extra)));
  lines.push('', `bench run took ${((nowMs() - t0) / 1000).toFixed(0)} s`);
  console.log('\n' + lines.join('\n'));

  if (WRITE) {
    let md = [
      '# tidemail benchmark results',
      '',
      'Written by `npm run bench` (test/bench/run.ts); rerun to refresh. Issue targets: at least ' +
        `${TARGET_RATIO}x Postfix's rate at each concurrency, idle RSS <= ${TARGET_IDLE_MIB} MB, ` +
        `RSS growth <= ${TARGET_HUGE_GROWTH_MIB} MB for one ${HUGE_MB} MB message.`,
      '',
      '```',
      ...lines,
      '```',
      '',
    ].join('\n');
    const out = path.join(ROOT, 'test', 'bench', 'RESULTS.md');
    // Keep the previous file's "## " sections — Link flaps (its figures refreshed below), and
    // the soak, per-stage and start-up sections that their own scripts write (soak.ts,
    // stages.ts, startup.ts) — as they were.
    const prevText = fs.existsSync(out) ? fs.readFileSync(out, 'utf8') : '';
    const firstSection = prevText.indexOf('\n## ');
    const previous = firstSection >= 0 ? prevText.slice(firstSection + 1) : linkFlapSection(prevText);
    if (previous) md = `${md.trimEnd()}\n\n${previous.trimEnd()}\n`;
    if (flapMarkdown) md = putLinkFlapSection(md, flapMarkdown);
    fs.writeFileSync(out, md);
    log(`wrote ${path.relative(process.cwd(), out) || out}`);
  }
}

main().then(
  () => {
    cleanupNow();
    process.exit(0);
  },
  (e: unknown) => {
    console.error(e);
    cleanupNow();
    process.exit(1);
  },
);
