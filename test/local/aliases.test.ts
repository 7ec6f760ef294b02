// aliases(5) parsing, the compiled table, and AliasTable's reload rules.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { AliasTable, classifyTarget, compileAliases, compiledAliasesPath, normalizeTarget, parseAliases, parseTargetFile } from '../../src/local/aliases.js';
import { ConfigError } from '../../src/errors.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const dir = tmpDir('tidemail-aliases-');
test.after(() => cleanupTmp());

const F = '/etc/aliases';
const targetsOf = (src: string) => Object.fromEntries([...parseAliases(src, F).aliases].map(([k, e]) => [k, e.targets]));

function configError(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  assert.unreachable('expected a ConfigError');
  return '';
}

async function configErrorAsync(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.instance(err, ConfigError);
    return (err as Error).message;
  }
  assert.unreachable('expected a ConfigError');
  return '';
}

test('entries, comments, continuation lines, CRLF, lower-cased names with their lines', () => {
  const src = '# head\r\n\r\nRoot: alice\r\nstaff: alice,\n\tbob ,\n  # inside\n   carol\n"odd name": dave\n';
  const { aliases, warnings } = parseAliases(src, F);
  assert.equal(warnings, []);
  assert.equal([...aliases.values()], [
    { name: 'root', targets: ['alice'], line: 3 },
    { name: 'staff', targets: ['alice', 'bob', 'carol'], line: 4 },
    { name: 'odd name', targets: ['dave'], line: 8 },
  ]);
});

test('target forms: quoted, pipe, file, include, \\user, display names and comments', () => {
  assert.equal(
    targetsOf(
      'a: "|/usr/bin/vacation alice", |/bin/cat, /var/mail/archive, "/path with space", :include:/etc/mail/list, :INCLUDE: /x, \\alice\n' +
        'b: Alice Smith <alice@example.org>, bob (Bob), "\\\\carol", "|/bin/echo \\"a,b\\""\n',
    ),
    {
      a: ['|/usr/bin/vacation alice', '|/bin/cat', '/var/mail/archive', '/path with space', ':include:/etc/mail/list', ':include:/x', '\\alice'],
      b: ['alice@example.org', 'bob', '\\carol', '|/bin/echo "a,b"'],
    },
  );
  assert.equal(classifyTarget('|/bin/cat -'), { kind: 'pipe', command: '/bin/cat -' });
  assert.equal(classifyTarget('/var/x'), { kind: 'file', path: '/var/x' });
  assert.equal(classifyTarget(':include:/l'), { kind: 'include', path: '/l' });
  assert.equal(classifyTarget('\\bob'), { kind: 'user', user: 'bob' });
  assert.equal(classifyTarget('Bob@Example.org'), { kind: 'address', address: 'Bob@Example.org' });
  assert.is(normalizeTarget('  '), null);
  assert.equal(normalizeTarget('"john doe"@example.org'), { target: '"john doe"@example.org' });
});

test('errors name file:line, all of them at once', () => {
  const msg = configError(() =>
    parseAliases('  stray\nok: alice\nnocolon alice\nx: "|unterminated\ny: alice,\n  "|"\nz:\nw@example.org: alice\nv: :include:relative\nu: alice smith\n', F),
  );
  for (const want of [
    '/etc/aliases:1: continuation line',
    "/etc/aliases:3: missing ':'",
    '/etc/aliases:4: unterminated quoted string',
    '/etc/aliases:6: pipe target without a command',
    '/etc/aliases:7: alias "z" has no targets',
    '/etc/aliases:8: alias names are local parts',
    '/etc/aliases:9: :include: needs an absolute path',
    '/etc/aliases:10: "alice smith" is not an address',
  ]) {
    assert.ok(msg.includes(want), `missing "${want}" in:\n${msg}`);
  }
  assert.match(msg, /\(8 errors\)/);
  assert.match(msg, /fix: .*newaliases/);
});

test('a duplicate name is a warning and the first entry wins', () => {
  const { aliases, warnings } = parseAliases('info: alice\nINFO: bob\n', F);
  assert.equal(aliases.get('info')?.targets, ['alice']);
  assert.equal(warnings, ['/etc/aliases:2: duplicate alias "info" (first at line 1); the first one is used']);
});

test('include/.forward files: one per line or comma-separated, comments, errors with lines', () => {
  assert.equal(parseTargetFile('# c\nalice, bob\n\n"|/bin/x y"\n', '/l'), { targets: ['alice', 'bob', '|/bin/x y'], errors: [] });
  assert.equal(parseTargetFile('alice\n"oops\n', '/l').errors, ['/l:2: unterminated quoted string']);
});

test('compileAliases writes the documented JSON table atomically', async () => {
  const file = writeFile(path.join(dir, 'aliases'), 'b: x\na: y, "|/bin/z"\n');
  const r = await compileAliases(file);
  assert.is(r.count, 2);
  assert.is(r.dbPath, compiledAliasesPath(file));
  assert.is(r.dbPath, `${file}.tidemail.json`);
  const j = JSON.parse(fs.readFileSync(r.dbPath, 'utf8'));
  const st = fs.statSync(file);
  assert.equal(j, { format: 'tidemail-aliases 1', source: file, sourceMtimeMs: st.mtimeMs, sourceSize: st.size, count: 2, aliases: [['a', 2, ['y', '|/bin/z']], ['b', 1, ['x']]] });
  assert.equal(fs.readdirSync(dir).sort(), ['aliases', 'aliases.tidemail.json'], 'no temp file left behind');
});

test('compileAliases: a missing file or a syntax error is a ConfigError, and the old table stays', async () => {
  assert.match(await configErrorAsync(compileAliases(path.join(dir, 'nope'))), /nope: no such file/);
  const file = writeFile(path.join(dir, 'aliases2'), 'a: x\n');
  await compileAliases(file);
  writeFile(file, 'a x\n');
  assert.match(await configErrorAsync(compileAliases(file)), /aliases2:1: missing ':'/);
  assert.equal(JSON.parse(fs.readFileSync(compiledAliasesPath(file), 'utf8')).aliases, [['a', 1, ['x']]]);
});

test('AliasTable: no file, text only, compiled only, and a new compiled table is picked up', async () => {
  const none = new AliasTable(null);
  await none.refresh();
  assert.is(none.size, 0);

  const missing = new AliasTable(path.join(dir, 'absent'));
  await missing.refresh();
  assert.is(missing.size, 0);

  const file = writeFile(path.join(dir, 'aliases3'), 'a: x\n');
  const t = new AliasTable(file);
  await t.refresh();
  assert.equal(t.get('A')?.targets, ['x']);

  await compileAliases(file);
  fs.rmSync(file); // the compiled table alone still answers
  await t.refresh();
  assert.equal(t.get('a')?.targets, ['x']);

  // A new table written by newaliases (from a new text) replaces the old one on the next refresh.
  writeFile(file, 'a: y\nb: z\n');
  await compileAliases(file);
  await t.refresh();
  assert.equal(t.get('a')?.targets, ['y']);
  assert.is(t.size, 2);
});

test('AliasTable: names that are Object.prototype keys are not aliases', async () => {
  const file = writeFile(path.join(dir, 'aliases4'), '__proto__: x\n');
  await compileAliases(file);
  const t = new AliasTable(file);
  await t.refresh();
  assert.equal(t.get('__proto__')?.targets, ['x']);
  assert.is(t.get('constructor'), undefined);
  assert.is(t.get('toString'), undefined);
});

test('newaliases, the daemon and the resolver read the text with one parser: same binary check, same capped errors', async () => {
  const bin = writeFile(path.join(dir, 'binary'), Buffer.from([0x61, 0x3a, 0x20, 0x62, 0x0a, 0x00, 0xff, 0x1b, 0x0a]));
  const fromTable = await configErrorAsync(new AliasTable(bin).refresh());
  assert.is(fromTable, await configErrorAsync(compileAliases(bin)));
  assert.match(fromTable, /binary data \(a NUL byte at offset 5\)/);
  assert.throws(() => parseAliases(fs.readFileSync(bin, 'latin1'), bin), /binary data/);

  const many = writeFile(path.join(dir, 'many'), 'x\n'.repeat(50));
  const msg = await configErrorAsync(new AliasTable(many).refresh());
  assert.is(msg, await configErrorAsync(compileAliases(many)));
  assert.is(msg, configError(() => parseAliases('x\n'.repeat(50), many)));
  assert.match(msg, /… and 30 more errors \(50 in all\)/);
  assert.is(msg.split('\n').filter((l) => l.includes("missing ':'")).length, 20);
});

test(':include: and .forward files: binary is one error, and errors are capped like the aliases file', () => {
  assert.equal(parseTargetFile('alice\n\0\x1b\n', '/l'), { targets: [], errors: ['/l: binary data (a NUL byte); not a list of addresses'] });
  const r = parseTargetFile('a b\n'.repeat(30), '/l');
  assert.is(r.errors.length, 21);
  assert.is(r.errors[20], '/l: … and 10 more errors (30 in all)');
});

test('a line longer than 64 KiB is an error without being held whole; the compiled table is no more readable than the text', async () => {
  const long = writeFile(path.join(dir, 'long'), `a: alice\nb: ${'x,'.repeat(40_000)}\nc: carol\n`);
  assert.match(await configErrorAsync(compileAliases(long)), /long:2: line longer than 65536 bytes/);
  const priv = writeFile(path.join(dir, 'private'), 'a: alice\n', 0o640);
  await compileAliases(priv);
  assert.is(fs.statSync(compiledAliasesPath(priv)).mode & 0o777, 0o640);
});

test.run();
