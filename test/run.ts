// The test runner behind `npm test`: runs every compiled *.test.js file in its own process
// (two at a time), sums uvu's per-file totals, and ends with "N passed, N failed".

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const FILE_TIMEOUT_MS = 10 * 60_000;
const PARALLEL = Number(process.env.TEST_JOBS ?? 2);

function findTests(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...findTests(p)); // bench/: only its unit tests are *.test.js
    else if (e.name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

interface FileResult {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  output: string;
  ms: number;
}

function runFile(file: string): Promise<FileResult> {
  const start = Date.now();
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, [file], { env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let grace: NodeJS.Timeout | null = null;
    const onData = (d: Buffer) => {
      output += d;
      // uvu printed its summary: a file that keeps running after that leaked a handle.
      if (!grace && /Duration:/.test(output)) {
        grace = setTimeout(() => {
          output += '\n[runner] still running 10 s after its summary (an open handle); stopped\n';
          proc.kill('SIGTERM');
        }, 10_000);
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    const timer = setTimeout(() => {
      output += `\n[runner] killed after ${FILE_TIMEOUT_MS / 1000}s\n`;
      proc.kill('SIGKILL');
    }, FILE_TIMEOUT_MS);
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (grace) clearTimeout(grace);
      const clean = output.replace(/\x1b\[[0-9;]*m/g, '');
      const num = (label: string) => Number(new RegExp(`${label}:\\s+(\\d+)`).exec(clean)?.[1] ?? NaN);
      const total = num('Total');
      const passed = num('Passed');
      const skipped = num('Skipped') || 0;
      // uvu's Total counts the tests that ran; skipped ones are reported apart.
      let failed = Number.isNaN(total) ? 1 : total - passed;
      if (code !== 0 && failed === 0) failed = 1; // crashed after its summary, or never printed one
      resolve({ file, passed: Number.isNaN(passed) ? 0 : passed, failed, skipped, output: clean, ms: Date.now() - start });
    });
  });
}

async function main(): Promise<void> {
  const filter = process.argv[2];
  const files = findTests(here).filter((f) => !filter || f.includes(filter));
  const queue = [...files];
  const results: FileResult[] = [];
  const worker = async () => {
    for (let f = queue.shift(); f; f = queue.shift()) {
      const r = await runFile(f);
      results.push(r);
      const rel = path.relative(here, r.file);
      process.stdout.write(`${r.failed ? 'FAIL' : 'ok  '} ${rel} (${r.passed} passed, ${r.failed} failed${r.skipped ? `, ${r.skipped} skipped` : ''}; ${(r.ms / 1000).toFixed(1)}s)\n`);
      if (r.failed) process.stdout.write(r.output.split('\n').map((l) => `    ${l}`).join('\n') + '\n');
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, PARALLEL) }, worker));
  const passed = results.reduce((a, r) => a + r.passed, 0);
  const failed = results.reduce((a, r) => a + r.failed, 0);
  const skipped = results.reduce((a, r) => a + r.skipped, 0);
  if (skipped) process.stdout.write(`${skipped} skipped (see above)\n`);
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exitCode = failed ? 1 : 0;
}

void main();
