// newaliases as a process: a small script calls runNewaliases and maps errors to exit codes
// the way main.ts does (reportError), so exit codes and output are what a user sees.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compiledAliasesPath } from '../../src/local/aliases.js';
import { LocalResolver } from '../../src/local/resolve.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const dir = tmpDir('tidemail-newaliases-');
test.after(() => cleanupTmp());

const src = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src');
const script = writeFile(
  path.join(dir, 'newaliases.mjs'),
  `import { runNewaliases } from ${JSON.stringify(path.join(src, 'cli/newaliases.js'))};\n` +
    `import { reportError } from ${JSON.stringify(path.join(src, 'cli/exit.js'))};\n` +
    `let code;\ntry { code = await runNewaliases(process.argv.slice(2)); } catch (err) { code = reportError('newaliases', err); }\n` +
    `process.exit(code);\n`,
);

function newaliases(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const users = new Map(['alice', 'bob', 'root'].map((n, i) => [n, { name: n, uid: 1000 + i, gid: 1000, home: `/home/${n}` }]));
const mailbox = (n: string) => ({ kind: 'mailbox', user: n, uid: users.get(n)!.uid, gid: 1000, home: `/home/${n}` });

test('compiles, prints "FILE: N aliases", and a running resolver picks up the new table', async () => {
  const file = writeFile(path.join(dir, 'aliases'), '# system\npostmaster: root\nstaff: alice,\n  bob\n');
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, `${file}: 2 aliases\n`);
  assert.is(r.stderr, '');
  assert.ok(fs.existsSync(compiledAliasesPath(file)));

  const resolver = new LocalResolver({ domains: ['mail.example'], hostname: 'mail.example', aliasesFile: file, forward: false, lookupUser: (n) => users.get(n) ?? null });
  assert.equal((await resolver.resolve('staff@mail.example'))?.targets, [mailbox('alice'), mailbox('bob')]);

  writeFile(file, 'staff: bob\n');
  const later = new Date(Date.now() + 5000);
  fs.utimesSync(file, later, later);
  const again = await newaliases([`--aliases=${file}`]);
  assert.is(again.stdout, `${file}: 1 aliases\n`);
  assert.equal((await resolver.resolve('staff@mail.example'))?.targets, [mailbox('bob')]);
});

test('duplicates are warnings on stderr with file:line; exit 0', async () => {
  const file = writeFile(path.join(dir, 'dups'), 'a: alice\nA: bob\n');
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 0);
  assert.is(r.stdout, `${file}: 1 aliases\n`);
  assert.match(r.stderr, `newaliases: warning: ${file}:2: duplicate alias "a"`);
});

test('syntax errors: exit 78 naming file:line, and no table is written', async () => {
  const file = writeFile(path.join(dir, 'broken'), 'ok: alice\nbad alice\n');
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 78);
  assert.match(r.stderr, `newaliases: configuration error: ${file}:2: missing ':'`);
  assert.not.ok(fs.existsSync(compiledAliasesPath(file)));
});

test('a missing aliases file is a configuration error (78); a stray argument is a usage error (64)', async () => {
  const missing = await newaliases(['--aliases', path.join(dir, 'none')]);
  assert.is(missing.code, 78);
  assert.match(missing.stderr, /none: no such file/);
  const stray = await newaliases(['--bogus']);
  assert.is(stray.code, 64);
  assert.match(stray.stderr, /usage: newaliases/);
});

test.run();
