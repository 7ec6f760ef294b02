// `sendmail -t` start-up against `node -e 0` (issue 17): wall time of one submission into the
// maildrop (no daemon running, so no poke answer to wait for), RUNS runs each, interleaved so
// background load hits both alike; median and minimum. Also the peak RSS of one sendmail run.
//
//   node dist/test/bench/startup.js [--runs 20]

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const i = argv.indexOf('--runs');
const RUNS = i >= 0 ? Number(argv[i + 1]) : 20;
const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');
const BIN = path.join(ROOT, 'bin', 'tidemail.js');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-startup-'));
const config = path.join(dir, 'tidemail.toml');
fs.writeFileSync(config, `state_dir = "${path.join(dir, 'state')}"\n`);
const input = 'To: root\nSubject: cron output\n\nhello\n';

function time(args: string[]): number {
  const t = performance.now();
  const r = spawnSync(process.execPath, args, { input });
  if (r.status !== 0) throw new Error(`${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
  return performance.now() - t;
}
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)]!, min: s[0]! };
};

const node: number[] = [];
const sendmail: number[] = [];
const nodeArgs = ['--max-semi-space-size=2']; // the launcher's shebang options
for (let k = 0; k < RUNS; k++) {
  node.push(time(['-e', '0']));
  sendmail.push(time([...nodeArgs, BIN, 'sendmail', '-C', config, '-t']));
}
// Peak RSS of one run (VmHWM at exit, read by a child wrapper that waits for it).
const hwm = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, ...nodeArgs, BIN, 'sendmail', '-C', config, '-t'], { input });
const nodeHwm = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, '-e', '0']);
const n = stats(node);
const s = stats(sendmail);
const kib = (r: typeof hwm) => Number(String(r.stderr).trim().split('\n').at(-1));
// What the launcher runs: the bundle when it is not older than dist/src (bin/tidemail.js).
const mtime = (p: string) => fs.statSync(path.join(ROOT, p), { throwIfNoEntry: false })?.mtimeMs;
const runs = (mtime('dist/bundle/main.js') ?? -1) >= (mtime('dist/src/main.js') ?? 0) ? 'dist/bundle' : 'dist/src';
console.log(`sendmail -t start-up (${runs}), ${new Date().toISOString()}, ${RUNS} runs each, interleaved (ms wall: median / min)`);
console.log(`  node -e 0          ${n.median.toFixed(0).padStart(5)} / ${n.min.toFixed(0).padStart(4)}   peak RSS ${(kib(nodeHwm) / 1024).toFixed(1)} MB`);
console.log(`  sendmail -t        ${s.median.toFixed(0).padStart(5)} / ${s.min.toFixed(0).padStart(4)}   peak RSS ${(kib(hwm) / 1024).toFixed(1)} MB`);
console.log(`  ratio              ${(s.median / n.median).toFixed(2)}x / ${(s.min / n.min).toFixed(2)}x   (target <= 1.3x)`);
fs.rmSync(dir, { recursive: true, force: true });
