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
    `import fs from 'node:fs';\n` +
    `let code;\ntry { code = await runNewaliases(process.argv.slice(2)); } catch (err) { code = reportError('newaliases', err); }\n` +
    // The peak RSS, for the memory tests.
    `if (process.env.RSS_FILE) fs.writeFileSync(process.env.RSS_FILE, String(process.resourceUsage().maxRSS * 1024));\n` +
    `process.exit(code);\n`,
);

// The users newaliases knows come from a passwd file ([local] passwd_file, looked up before
// the system's), so the warnings do not depend on who has an account on this machine.
const passwd = writeFile(path.join(dir, 'passwd'), ['alice', 'bob', 'root', 'carol'].map((n, i) => `${n}:x:${1000 + i}:1000::/home/${n}:/bin/sh`).join('\n') + '\n');
const config = writeFile(path.join(dir, 'tidemail.toml'), `hostname = "mail.example"\n[local]\ndomains = ["mail.example", "family.example"]\npasswd_file = "${passwd}"\n[local.users]\ninfo = "carol"\n`);

function newaliases(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, '--config', config, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
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

test('a target that is nobody here: a warning with file:line, the table is still written, and the address bounces 5.1.1 (not 5.4.6)', async () => {
  const file = writeFile(
    path.join(dir, 'unknown'),
    ['bob2: nosuchuser', 'team: alice, ghost@mail.example, \\nobody-here, far@elsewhere.example', 'helpdesk: info, alice+tickets', 'self: self', 'ok: postmaster, bob@family.example', ''].join('\n'),
  );
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, `${file}: 5 aliases\n`);
  const warnings = r.stderr.trim().split('\n');
  assert.match(r.stderr, `newaliases: warning: ${file}:1: bob2: "nosuchuser" is neither an alias nor a user here`);
  assert.match(r.stderr, `newaliases: warning: ${file}:2: team: "ghost@mail.example" is neither an alias nor a user here`);
  assert.match(r.stderr, `newaliases: warning: ${file}:2: team: "\\nobody-here" is not a user here`);
  assert.match(r.stderr, `newaliases: warning: ${file}:4: self: "self" names this alias itself`);
  assert.match(r.stderr, /5\.1\.1/);
  assert.is(warnings.length, 4, r.stderr); // info (a [local] users name), alice+tickets, postmaster, far@elsewhere: fine
  assert.ok(fs.existsSync(compiledAliasesPath(file)));

  // What the daemon answers for them: 5.1.1 when nothing is left, the known members still get it.
  const resolver = new LocalResolver({ domains: ['mail.example'], hostname: 'mail.example', aliasesFile: file, forward: false, lookupUser: (n) => users.get(n) ?? null });
  const err = await resolver.resolve('bob2@mail.example').then(() => null, (e: unknown) => e as { status: string; permanent: boolean });
  assert.is(err?.status, '5.1.1');
  assert.is(err?.permanent, true);
  assert.equal((await resolver.resolve('team@mail.example'))?.targets.map((t) => (t.kind === 'mailbox' ? t.user : t.kind)), ['alice', 'remote']);
});

test('alias loops: one warning per loop naming file:line and every alias on it; mail through one bounces 5.4.6', async () => {
  const file = writeFile(path.join(dir, 'loops'), ['a: b', 'b: c, alice', 'c: a@mail.example', 'x: y', 'y: x', 'z: a', 'diamond: p, q', 'p: alice', 'q: p', ''].join('\n'));
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 0, r.stderr);
  const loops = r.stderr.trim().split('\n').filter((l) => /alias loop/.test(l));
  assert.is(loops.length, 2, r.stderr);
  assert.ok(loops.some((l) => l.includes('alias loop: a → b → c → a') && l.includes(`${file}:1:`) && /line 3/.test(l)), r.stderr);
  assert.ok(loops.some((l) => l.includes('alias loop: x → y → x')), r.stderr);
  assert.not.match(r.stderr, /diamond|unknown|neither/);
  const resolver = new LocalResolver({ domains: ['mail.example'], hostname: 'mail.example', aliasesFile: file, forward: false, lookupUser: (n) => users.get(n) ?? null });
  const err = await resolver.resolve('z@mail.example').then(() => null, (e: unknown) => e as { status: string });
  assert.is(err?.status, '5.4.6');
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

/** Bytes a terminal would act on, or that show that raw file bytes were echoed. */
const RAW = /[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\ufffd]/;

test('a binary file: one clear message (exit 78), no raw bytes, and it stops early', async () => {
  const bytes = Buffer.alloc(5 << 20);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7919 + (i >> 9)) & 0xff; // every byte value, no pattern that looks like text
  const file = writeFile(path.join(dir, 'binary'), bytes);
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 78, r.stderr.slice(0, 2000));
  assert.match(r.stderr, /binary/);
  assert.ok(r.stderr.split('\n').length < 6, `${r.stderr.split('\n').length} lines of output`);
  assert.not.match(r.stderr, RAW);
  assert.not.ok(fs.existsSync(compiledAliasesPath(file)));
});

test('many bad lines: the first 20 errors, then "… and N more"; bad text is shown escaped and short', async () => {
  const bad = Array.from({ length: 1000 }, (_, i) => `nocolon${i} alice`);
  bad[0] = `cleared: \x1b[2Jcleared\x07 ${'x y '.repeat(500)}`;
  const file = writeFile(path.join(dir, 'manybad'), `ok: alice\n${bad.join('\n')}\n`);
  const r = await newaliases(['--aliases', file]);
  assert.is(r.code, 78);
  const lines = r.stderr.trim().split('\n');
  assert.ok(lines.length <= 24, `${lines.length} lines`);
  assert.match(r.stderr, /… and 980 more errors \(1000 in all\)/);
  assert.match(r.stderr, new RegExp(`${file}:2: `));
  assert.not.match(r.stderr, RAW);
  assert.match(r.stderr, /\\x1b\[2Jcleared\\x07/, 'control characters are shown escaped');
  assert.ok(lines.every((l) => l.length < 300), 'a line of output is too long');
});

test('500 000 aliases compile with the text streamed: memory does not hold the text', async () => {
  const n = 500_000;
  const file = path.join(dir, 'big');
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < n; i += 10_000) {
    let chunk = '';
    for (let j = i; j < i + 10_000; j++) chunk += `user${j}: alice, bob${j}@example.org, "|/usr/bin/x ${j}"\n`;
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  const rss = path.join(dir, 'rss');
  const start = process.hrtime.bigint();
  const r = await newaliases(['--aliases', file], { RSS_FILE: rss });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  assert.is(r.code, 0, r.stderr);
  assert.is(r.stdout, `${file}: ${n} aliases\n`);
  const mb = Number(fs.readFileSync(rss, 'utf8')) / 2 ** 20;
  process.stderr.write(`    (500 000 aliases: ${Math.round(ms)} ms, peak RSS ${Math.round(mb)} MB)\n`);
  assert.ok(mb < 400, `peak RSS ${Math.round(mb)} MB`);

  // 500 000 bad lines: the errors are capped, so memory stays flat.
  const badFile = path.join(dir, 'bigbad');
  fs.writeFileSync(badFile, 'no colon here\n'.repeat(n));
  const bad = await newaliases(['--aliases', badFile], { RSS_FILE: rss });
  assert.is(bad.code, 78);
  const badMb = Number(fs.readFileSync(rss, 'utf8')) / 2 ** 20;
  assert.ok(badMb < 120, `peak RSS ${Math.round(badMb)} MB for a file of errors`);
  assert.match(bad.stderr, /… and 499980 more errors/);
});

test.run();
