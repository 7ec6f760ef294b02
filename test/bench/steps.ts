// Where one message's time goes at c=1, one connection per message, command by command:
// `node dist/test/bench/steps.js [--messages N] [--rounds R]` (root, for the private Postfix).
// A client of its own (TCP_NODELAY, no pipelining, like smtp-source without -d) times each
// step from the previous reply to the next one: connect, greeting, EHLO, MAIL, RCPT, DATA, the
// dot (body + the server's durable commit) and QUIT, as medians over N messages, against the
// raw sink + fdatasync floor, our engine + fdatasync (stages.ts --serve), the daemon and a private
// Postfix, taking turns round by round. The sums say what a message costs in a row; the rows
// say which step is ours to cut (RESULTS.md "The c=1 path step by step").

import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './common.js';
import { findPostfix, startPostfix, type PostfixInstance } from './postfix.js';
import { startSinkProcess, type SinkProcess } from './sink.js';
import { startTidemail, type Daemon } from './tidemail.js';

const STEPS = ['connect', 'greeting', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'dot', 'QUIT'] as const;
const BODY = `From: a@bench.client\r\nTo: d@example.org\r\nSubject: steps\r\n\r\n${`${'y'.repeat(76)}\r\n`.repeat(50)}.\r\n`;
const COMMANDS = ['EHLO bench.client\r\n', 'MAIL FROM:<a@bench.client>\r\n', 'RCPT TO:<d@example.org>\r\n', 'DATA\r\n', BODY, 'QUIT\r\n'];
/** A complete reply: its last line has a space after the code. */
const LAST_LINE = /(?:^|\n)\d{3} [^\n]*\n$/;

/** One message on its own connection; the µs of each step, or an error for a refusal. */
function oneMessage(port: number): Promise<number[]> {
  return new Promise((resolve, reject) => {
    const marks = [process.hrtime.bigint()];
    const s = net.createConnection({ port, host: '127.0.0.1' });
    s.setNoDelay(true);
    s.setEncoding('latin1');
    let buf = '';
    let next = 0;
    s.on('connect', () => marks.push(process.hrtime.bigint()));
    s.on('data', (d: string) => {
      buf += d;
      if (!LAST_LINE.test(buf)) return;
      if (!/^[23]/.test(buf.slice(buf.lastIndexOf('\n', buf.length - 2) + 1))) {
        s.destroy();
        return reject(new Error(`refused: ${buf.trim()}`));
      }
      buf = '';
      marks.push(process.hrtime.bigint());
      if (next < COMMANDS.length) return void s.write(COMMANDS[next++]!);
      s.destroy();
      resolve(marks.slice(1).map((t, i) => Number(t - marks[i]!) / 1000));
    });
    s.on('error', reject);
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0;

/** Medians per step over `n` messages (after a warm-up of n/5), and the rate of the run. */
async function measure(port: number, n: number): Promise<{ steps: number[]; rate: number }> {
  for (let i = 0; i < Math.ceil(n / 5); i++) await oneMessage(port);
  const per: number[][] = STEPS.map(() => []);
  const start = process.hrtime.bigint();
  for (let i = 0; i < n; i++) (await oneMessage(port)).forEach((us, k) => per[k]!.push(us));
  const wallS = Number(process.hrtime.bigint() - start) / 1e9;
  return { steps: per.map(median), rate: n / wallS };
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}

async function main(): Promise<void> {
  const n = option('--messages', 1500);
  const rounds = option('--rounds', 2);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const repo = path.resolve(here, '..', '..', '..');
  const subjects: { name: string; port: number; stop: () => Promise<unknown> }[] = [];
  const floor: SinkProcess = await startSinkProcess(0, { fsync: true });
  subjects.push({ name: 'floor+fsync', port: floor.port, stop: () => floor.stop() });
  const engine: SinkProcess = await startSinkProcess(0, { script: path.join(here, 'stages.js'), args: ['--serve', '0', '--fsync'] });
  subjects.push({ name: 'engine+fsync', port: engine.port, stop: () => engine.stop() });
  const tport = await freePort();
  const tidemail: { daemon: Daemon; dir: string } = await startTidemail(repo, tport);
  subjects.push({ name: 'tidemail', port: tport, stop: () => tidemail.daemon.stop().then(() => fs.rmSync(tidemail.dir, { recursive: true, force: true })) });
  const { postfix } = await findPostfix();
  if (postfix && process.getuid?.() === 0) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tidemail-steps-postfix-'));
    fs.chmodSync(dir, 0o755);
    const pport = await freePort();
    const pf: PostfixInstance = await startPostfix(postfix, dir, pport);
    subjects.push({ name: 'postfix', port: pport, stop: () => pf.stop().then(() => fs.rmSync(dir, { recursive: true, force: true })) });
  } else console.log('(no Postfix row: not installed, or not root)');
  try {
    console.log(`median us per step, c=1, one connection per message, ${n} messages x ${rounds} round(s), ${new Date().toISOString()}`);
    console.log(`  ${'subject'.padEnd(13)}${STEPS.map((s) => s.padStart(9)).join('')}      sum   msg/s`);
    for (let r = 0; r < rounds; r++) {
      for (const s of r % 2 ? [...subjects].reverse() : subjects) {
        const m = await measure(s.port, n);
        const sum = m.steps.reduce((a, b) => a + b, 0);
        console.log(`  ${s.name.padEnd(13)}${m.steps.map((x) => x.toFixed(0).padStart(9)).join('')}${sum.toFixed(0).padStart(9)}${m.rate.toFixed(0).padStart(8)}`);
      }
    }
  } finally {
    for (const s of subjects) await s.stop();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
