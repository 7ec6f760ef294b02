// `sendmail -t` start-up against `node -e 0` (issue 17): one submission into the maildrop (no
// daemon running, so no poke answer to wait for), RUNS runs each, interleaved so background
// load hits all alike. Wall time, CPU time (user + sys) and peak RSS of each run, from wait4(2):
// node cannot read a child's rusage, so a small python3 loop starts the runs (its own start-up
// is outside every figure). The sendmail runs use the launcher's #! flags, as a cron job does.
//
//   node dist/test/bench/startup.js [--runs 40] [--compare PACKAGE_ROOT]...
//
// --compare adds the sendmail of another checkout or package root (an older build, say) to the
// same interleaved runs.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const argv = process.argv.slice(2);
const opt = (name: string) => argv.flatMap((a, i) => (a === name && argv[i + 1] ? [argv[i + 1]!] : []));
const RUNS = Number(opt('--runs')[0] ?? 40);
const ROOT = path.resolve(fileURLToPath(import.meta.url), '../../../..');

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tm-startup-'));
const config = path.join(dir, 'tidemail.toml');
fs.writeFileSync(config, `state_dir = "${path.join(dir, 'state')}"\n`);
const input = 'To: root\nSubject: cron output\n\nhello\n';

/** The node flags on a launcher's #! line. */
function launcherFlags(root: string): string[] {
  const words = fs.readFileSync(path.join(root, 'bin', 'tidemail.js'), 'utf8').split('\n', 1)[0]!.split(/\s+/);
  return words.slice(words.indexOf('node') + 1).filter((w) => w.startsWith('--'));
}
/** What a launcher runs: the bundle when it is not older than dist/src (bin/tidemail.js). */
function runs(root: string): string {
  const mtime = (p: string) => fs.statSync(path.join(root, p), { throwIfNoEntry: false })?.mtimeMs;
  const checkout = mtime('src/main.ts') !== undefined;
  const bundle = mtime('dist/bundle/main.js');
  return bundle !== undefined && (!checkout || bundle >= (mtime('dist/src/main.js') ?? 0)) ? 'dist/bundle' : 'dist/src';
}
const sendmailOf = (root: string) => [process.execPath, ...launcherFlags(root), path.join(root, 'bin', 'tidemail.js'), 'sendmail', '-C', config, '-t'];

const commands: Record<string, string[]> = { 'node -e 0': [process.execPath, '-e', '0'], 'sendmail -t': sendmailOf(ROOT) };
for (const other of opt('--compare')) commands[`sendmail -t ${other} (${runs(other)})`] = sendmailOf(path.resolve(other));

// Forks each command with the message on a pipe, RUNS rounds in turn; prints one JSON line
// per command: [[wall ms, cpu ms, maxrss KiB], ...].
const RUNNER = `
import json, os, sys, time
runs, cmds, data = int(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3].encode()
out = {k: [] for k in cmds}
for _ in range(runs):
    for k, argv in cmds.items():
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.dup2(r, 0); os.close(r); os.close(w)
            null = os.open('/dev/null', os.O_WRONLY); os.dup2(null, 1)
            try: os.execv(argv[0], argv)
            finally: os._exit(127)
        os.close(r); os.write(w, data); os.close(w)
        _, status, ru = os.wait4(pid, 0)
        wall = (time.perf_counter() - t) * 1000
        if status != 0: sys.exit(f'{argv}: wait status {status}')
        out[k].append([wall, (ru.ru_utime + ru.ru_stime) * 1000, ru.ru_maxrss])
print(json.dumps(out))
`;
const r = spawnSync('python3', ['-c', RUNNER, String(RUNS), JSON.stringify(commands), input], { encoding: 'utf8', maxBuffer: 64 << 20 });
if (r.status !== 0) {
  console.error(`startup bench: the python3 runner failed (${r.error?.message ?? r.stderr.trim()})`);
  process.exit(1);
}
const results = JSON.parse(r.stdout) as Record<string, [number, number, number][]>;

const q = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
};
const ms = (x: number) => x.toFixed(0).padStart(4);
console.log(`sendmail -t start-up (${runs(ROOT)}), ${new Date().toISOString()}, ${RUNS} runs each, interleaved, load ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(`${''.padEnd(28)}  wall median / min / p25-p75     CPU median / min / p25-p75     peak RSS`);
const node = results['node -e 0']!;
for (const [name, xs] of Object.entries(results)) {
  const wall = xs.map((x) => x[0]), cpu = xs.map((x) => x[1]), rss = xs.map((x) => x[2] / 1024);
  console.log(
    `${name.padEnd(28)}  ${ms(q(wall, 0.5))} / ${ms(Math.min(...wall))} / ${ms(q(wall, 0.25))}-${ms(q(wall, 0.75))} ms   ` +
      `${ms(q(cpu, 0.5))} / ${ms(Math.min(...cpu))} / ${ms(q(cpu, 0.25))}-${ms(q(cpu, 0.75))} ms   ${Math.min(...rss).toFixed(1)}-${Math.max(...rss).toFixed(1)} MB`,
  );
  if (xs !== node) {
    const ratio = (i: number, f: (v: number[]) => number) => (f(xs.map((x) => x[i]!)) / f(node.map((x) => x[i]!))).toFixed(2);
    const median = (v: number[]) => q(v, 0.5);
    const min = (v: number[]) => Math.min(...v);
    console.log(`${''.padEnd(28)}  ratio to node -e 0: wall ${ratio(0, median)}x / ${ratio(0, min)}x, CPU ${ratio(1, median)}x / ${ratio(1, min)}x (median / min; target <= 1.3x)`);
  }
}
// The summary lines `npm run bench` reads (test/bench/targets.ts parseStartup): median / min wall, peak RSS.
for (const name of ['node -e 0', 'sendmail -t']) {
  const xs = results[name]!;
  const wall = xs.map((x) => x[0]);
  console.log(`  ${name.padEnd(18)} ${q(wall, 0.5).toFixed(0).padStart(5)} / ${Math.min(...wall).toFixed(0).padStart(4)}   peak RSS ${(Math.max(...xs.map((x) => x[2])) / 1024).toFixed(1)} MB`);
}
fs.rmSync(dir, { recursive: true, force: true });
