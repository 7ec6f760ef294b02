// The issue-17 block of the bench report (targets.ts): verdicts, reasons computed from the
// run's figures, and the parsers for startup.js / stages.js output. Figures from the 11:34 run
// in RESULTS.md; no bench is run here.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseStages, parseStartup, targetLines, type TargetFigures } from './targets.js';

const run: TargetFigures = {
  fsyncMs: 0.28,
  cores: 2,
  reused: [
    { c: 1, tidemail: 608, postfix: 746, cpuUs: 1335, jsUs: 740, machineBusy: 0.5 },
    { c: 10, tidemail: 1615, postfix: 1158, cpuUs: 675, jsUs: 477, machineBusy: 0.7 },
    { c: 50, tidemail: 1884, postfix: 1209, cpuUs: 555, jsUs: 414, machineBusy: 0.7 },
  ],
  oneConnection: [
    { c: 1, tidemail: 425, postfix: 539, cpuUs: 1930, jsUs: 1270 },
    { c: 10, tidemail: 905, postfix: 843, cpuUs: 1255, jsUs: 939, machineBusy: 0.95 },
    { c: 50, tidemail: 1078, postfix: 950, cpuUs: 1095, jsUs: 789 },
  ],
  floorCpuUs: { 1: 220, 10: 90, 50: 75 },
  stages: [{ stage: 'bare', cpuUs: 640 }, { stage: '+ spool', cpuUs: 477 }, { stage: '+ commit', cpuUs: 800 }, { stage: '+ events', cpuUs: 752 }, { stage: '+ log', cpuUs: 724 }],
  idle: { rssMiB: 62.4, nodeMiB: 39.4, imports: [{ name: 'mailauth', addMiB: 35.7 }, { name: 'smtp-server', addMiB: 12.7 }, { name: 'sqlite3', addMiB: 4.4 }, { name: 'smol-toml', addMiB: 3.6 }] },
  peak: { hwmMiB: 82.2, idleMiB: 62.4, concurrency: 50 },
  hugeGrowthMiB: 12.4,
  hugeMiB: 50,
  startup: { sendmailMs: 143, nodeMs: 64, sendmailPeakMiB: 52.1, nodePeakMiB: 41.0 },
};

const block = (f: TargetFigures) => targetLines(f).join('\n');
/** The target's line and the indented why/next lines under it. */
function entry(text: string, label: string): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => l.startsWith(`  ${label}`));
  assert.ok(i >= 0, `no line for ${label} in:\n${text}`);
  let j = i + 1;
  while (j < lines.length && lines[j]!.startsWith('    ')) j++;
  return lines.slice(i, j).join('\n');
}

test('each target has one line with this run\'s figure and its verdict', () => {
  const text = block(run);
  assert.match(entry(text, 'acceptance >= 1.5x Postfix, -d'), /0\.82\/1\.39\/1\.56x at c=1\/10\/50\s+MISSED at c=1,10\n/);
  assert.match(entry(text, 'acceptance >= 1.5x Postfix, one conn/msg'), /0\.79\/1\.07\/1\.13x at c=1\/10\/50\s+MISSED\n/);
  assert.match(entry(text, 'daemon CPU per message <= 0.40 ms'), /-d 1\.33\/0\.68\/0\.56, one conn\/msg 1\.93\/1\.25\/1\.09 ms\s+MISSED/);
  assert.match(entry(text, 'idle RSS <= 45 MB'), /62\.4 MB\s+MISSED/);
  assert.match(entry(text, 'peak RSS at c=50 <= 80 MB'), /82\.2 MB\s+MISSED/);
  assert.match(entry(text, '50 MB message: growth <= 16 MB'), /12\.4 MB\s+met$/);
  assert.match(entry(text, 'sendmail -t <= 1.3x node -e 0'), /2\.23x \(143 vs 64 ms\)\s+MISSED/);
});

test('a miss says why from the run\'s own figures, and what next', () => {
  const text = block(run);
  const reused = entry(text, 'acceptance >= 1.5x Postfix, -d');
  // c=1: 1.5 x 746 = 1119 msg/s = 894 us per message; 608 msg/s is 1645 us, serial CPU + fsync.
  assert.match(reused, /why: c=1: needs 1119 msg\/s \(894 us per message\), has 608 \(1645 us\); serial: daemon CPU 1335 us \(JS thread 740\) \+ fsync 280 us/);
  assert.match(reused, /why: c=10: needs 1737 msg\/s .* JS thread 77% busy, so sessions wait on the one queue writer/);
  assert.not.match(reused, /c=50: needs/); // met there
  assert.match(reused, /next: at c=1 a message is its round trips and its own durable commit .*test\/bench\/steps\.js/);
  assert.match(entry(text, 'acceptance >= 1.5x Postfix, one conn/msg'), /c=10: .*the machine is 95% busy \(2 cores\)/);
  const cpu = entry(text, 'daemon CPU');
  assert.match(cpu, /the floor \(a Node SMTP sink storing nothing\) costs 220\/90\/75 us with -d/);
  assert.match(cpu, /bare 640, \+ spool -163, \+ commit \+323, \+ events -48, \+ log -28 us; the daemon 1930, 1206 more than "\+ log"/);
  // Only the libraries the idle daemon loads: 39.4 + 12.7 + 4.4 + 3.6 = 60.1 MB, mailauth not among them.
  const idle = entry(text, 'idle RSS');
  assert.match(idle, /why: plain node 39\.4 MB \+ sqlite3 4\.4 \+ smol-toml 3\.6 \(each imported alone\) = 47\.4 MB; the rest, 15\.0 MB, is our code and its data; node alone leaves 5\.6 MB of the 45/);
  assert.not.match(idle, /mailauth/);
  assert.match(entry(text, 'peak RSS'), /why: idle 62\.4 MB \+ 19\.8 MB under load/);
  assert.match(entry(text, 'sendmail -t'), /why: 79 ms over starting node \(the budget is 19 ms\), and 11\.1 MB more peak RSS/);
  assert.not.match(entry(text, '50 MB message'), /why|next/);
});

test('a missed acceptance cites the floors of the same run, and the CPU reason the engine floor', () => {
  const withFloors: TargetFigures = {
    ...run,
    // c=1 without -d: raw sink 1250 msg/s (800 us), + fdatasync 1000 (1000 us), our engine 1100
    // (909 us), + fdatasync 780 (1282 us, over the 1237 us budget of 1.5 x 539 msg/s); tidemail
    // 425 msg/s is 2353 us, 1071 us of it its own.
    oneConnection: run.oneConnection.map((x) => (x.c === 1 ? { ...x, floors: { sink: 1250, sinkFsync: 1000, engine: 1100, engineFsync: 780 } } : x)),
    engineCpuUs: { reused: { 1: 300, 10: 120, 50: 110 }, oneConnection: { 1: 450, 10: 260 } },
  };
  const text = block(withFloors);
  const one = entry(text, 'acceptance >= 1.5x Postfix, one conn/msg');
  assert.match(one, /why: c=1: needs 809 msg\/s .*; floors of this run, us per message: Node sink 800, \+ fdatasync 1000, our engine storing nothing 909, \+ fdatasync 1282 \(the floor alone is over the budget\); tidemail's own part 1071 us\n/);
  assert.not.match(one, /c=10: .*floors of this run/); // no floor figures for that cell
  assert.match(entry(text, 'daemon CPU'), /our engine storing nothing costs 300\/120\/110 us with -d, 450\/260 us one conn\/msg/);
  assert.not.match(block(run), /floors of this run|our engine storing nothing/);
});

test('a missed idle target splits the RSS into node\'s binary pages and ours, and names the privsep helper', () => {
  // 2026-12-03 16:58: daemon 57.3 MB of which node's binary 40.3 (plain node 39.4, binary 30.1), USS 20.9 vs 6.2.
  const split = { rssMiB: 57.3, binaryMiB: 40.3, ussMiB: 20.9, node: { rssMiB: 39.4, binaryMiB: 30.1, ussMiB: 6.2 }, helper: { rssMiB: 43.8, ussMiB: 7.5 }, treePssMiB: 62.9 };
  const idle = entry(block({ ...run, idle: { ...run.idle!, rssMiB: 57.3, split } }), 'idle RSS <= 45 MB');
  assert.match(idle, /57\.3 MB\s+MISSED/);
  // rest 17.0 vs plain node's 9.3: ours 10.2 MB more binary pages + 7.7 MB.
  assert.match(idle, /why: of 57\.3 MB, 40\.3 MB are node's own binary pages \(plain node 30\.1\) and 17\.0 MB the rest \(plain node 9\.3\); ours: 10\.2 MB more binary pages \(node code that our code runs\) \+ 7\.7 MB, private \(USS\) 20\.9 MB vs 6\.2; node's binary alone leaves 4\.7 MB of the 45/);
  assert.match(idle, /also: the privsep helper, a second node process \(not in this RSS\): RSS 43\.8 MB, USS 7\.5 MB; PSS of the daemon's processes 62\.9 MB/);
  assert.not.match(idle, /each imported alone/);
  const noHelper = entry(block({ ...run, idle: { ...run.idle!, rssMiB: 57.3, split: { ...split, helper: undefined } } }), 'idle RSS <= 45 MB');
  assert.not.match(noHelper, /privsep helper/);
});

test('targets that are met get no reason; missing figures say so', () => {
  const fast: TargetFigures = {
    ...run,
    reused: run.reused.map((x) => ({ ...x, tidemail: x.postfix * 2, cpuUs: 300 })),
    oneConnection: [],
    idle: { ...run.idle!, rssMiB: 44 },
    peak: { ...run.peak!, hwmMiB: 70 },
    hugeGrowthMiB: 20,
    startup: undefined,
  };
  const text = block(fast);
  assert.match(entry(text, 'acceptance >= 1.5x Postfix, -d'), /2\.00\/2\.00\/2\.00x at c=1\/10\/50\s+met$/);
  assert.match(entry(text, 'acceptance >= 1.5x Postfix, one conn/msg'), /not measured\s+n\/a$/);
  assert.match(entry(text, 'daemon CPU'), /-d 0\.30\/0\.30\/0\.30 ms\s+met$/);
  assert.match(entry(text, 'idle RSS'), /44\.0 MB\s+met$/);
  assert.match(entry(text, 'peak RSS'), /70\.0 MB\s+met$/);
  assert.match(entry(text, '50 MB message'), /20\.0 MB\s+MISSED\n    next: /);
  assert.match(entry(text, 'sendmail -t'), /not measured\s+n\/a$/);
});

test('startup.js and stages.js output is read back', () => {
  const startup = `sendmail -t start-up (dist/bundle), 2026-12-03T10:00:00.000Z, 10 runs each, interleaved (ms wall: median / min)
  node -e 0             64 /   60   peak RSS 41.0 MB
  sendmail -t          143 /  130   peak RSS 52.1 MB
  ratio              2.23x / 2.17x   (target <= 1.3x)`;
  assert.equal(parseStartup(startup), { nodeMs: 64, sendmailMs: 143, nodePeakMiB: 41, sendmailPeakMiB: 52.1 });
  assert.is(parseStartup('node: not found'), undefined);
  const stages = `per-stage cost, 2026-12-03T10:00:00.000Z, 1000 x 4 KiB, smtp-source without -d (one connection per message)
  stage                c=1: rate, CPU/msg           c=10: rate, CPU/msg
  bare          1133 msg/s   640 us     3448 msg/s   279 us
  + spool       1394 msg/s   477 us     3772 msg/s   257 us
  + log          864 msg/s   724 us     2342 msg/s   421 us`;
  assert.equal(parseStages(stages), [{ stage: 'bare', cpuUs: 640 }, { stage: '+ spool', cpuUs: 477 }, { stage: '+ log', cpuUs: 724 }]);
});

test.run();
