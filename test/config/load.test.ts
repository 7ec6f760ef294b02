// Configuration errors as an admin meets them: `tidemail config check` and `tidemail daemon`
// (the real programs) refuse a broken main or route file with EX_CONFIG (78), and the message
// names file:line:column, the key, and a fix with an example. Without any config file the embedded default is used.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, type CliResult } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';
import { SYSTEM_CONFIG } from '../../src/config/load.js';

test.after(() => cleanupTmp());

/** A main config file; returns its path and the 1-based line of the first line matching `mark`. */
async function mainConfig(lines: string[], mark: RegExp): Promise<{ file: string; line: number }> {
  const dir = tmpDir();
  const port = await freePort();
  const text = lines.join('\n').replace('PORT', String(port)).replace('STATE', path.join(dir, 'state')) + '\n';
  const file = writeFile(path.join(dir, 'tidemail.toml'), text);
  const idx = text.split('\n').findIndex((l) => mark.test(l));
  assert.ok(idx >= 0, `marker ${mark} not in the config`);
  return { file, line: idx + 1 };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Both commands refuse the config with 78, naming file:line:column and a fix. */
async function assertRefused(configPath: string, file: string, line: number, problem: RegExp, column?: number): Promise<void> {
  const runs: [string, CliResult][] = [
    ['config check', await runCli(['config', 'check', '--config', configPath])],
    ['daemon', await runCli(['daemon', '--config', configPath], { timeoutMs: 15_000 })],
  ];
  for (const [what, r] of runs) {
    assert.is(r.code, 78, `${what}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${escape(file)}:${line}:${column ?? '\\d+'}\\b`), `${what} does not name ${file}:${line}:${column ?? 'COLUMN'}:\n${r.stderr}`);
    assert.match(r.stderr, problem, `${what}: ${r.stderr}`);
    assert.match(r.stderr, /\n\s*fix: \S/, `${what} gives no fix:\n${r.stderr}`);
    assert.not.match(r.stderr, /\n\s+at /, `${what} printed a stack trace:\n${r.stderr}`);
  }
}

test('a valid config with a route passes config check (the control case)', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "smtp.example.net:587"\n');
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`${escape(site.configPath)}: ok \\(1 route`));
});

test('TOML syntax error → 78 with the line of the error', async () => {
  const { file, line } = await mainConfig(
    ['hostname = "gw.test"', 'state_dir = "STATE"', '[smtp]', 'listen = 127.0.0.1:PORT', 'max_message_size = "25M"'],
    /^listen/,
  );
  await assertRefused(file, file, line, /syntax/i);
});

test('a value of the wrong type (max_message_size = "lots") → 78 naming the key', async () => {
  const { file, line } = await mainConfig(
    ['hostname = "gw.test"', 'state_dir = "STATE"', '', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'max_message_size = "lots"', 'max_clients = 10'],
    /^max_message_size/,
  );
  await assertRefused(file, file, line, /max_message_size/);
});

test('a number where a string list belongs, and a string where a number belongs → 78', async () => {
  const a = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'trusted_networks = 10'], /^trusted_networks/);
  await assertRefused(a.file, a.file, a.line, /trusted_networks.*list of strings/);
  const b = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'max_recipients = "ten"'], /^max_recipients/);
  await assertRefused(b.file, b.file, b.line, /max_recipients.*whole number/);
});

test('smtps without a certificate, and tls_cert without tls_key → 78 naming the key', async () => {
  const a = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'smtps = ["127.0.0.1:1465"]'], /^smtps/);
  await assertRefused(a.file, a.file, a.line, /'smtp\.smtps' needs a TLS certificate/);
  const b = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'tls_cert = "cert.pem"'], /^tls_cert/);
  await assertRefused(b.file, b.file, b.line, /tls_cert' is set without its pair/);
});

test('an unknown key (typo trusted_network) → 78 with a did-you-mean fix', async () => {
  const { file, line } = await mainConfig(
    ['hostname = "gw.test"', 'state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', 'trusted_network = ["192.168.1.0/24"]'],
    /^trusted_network /,
  );
  await assertRefused(file, file, line, /trusted_network.*not a known setting[\s\S]*fix: did you mean 'trusted_networks'/);
});

test('an unknown section ([smpt]) → 78', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '', '[smpt]', 'listen = ["127.0.0.1:PORT"]'], /^\[smpt\]/);
  await assertRefused(file, file, line, /smpt.*not a known setting/);
});

test('a route file without smarthost → 78 naming the route file', async () => {
  const site = await makeSite();
  site.route('isp', '# my ISP\ntls = "starttls"\nauth.user = "me@example.net"\n');
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 1, /no smarthost[\s\S]*fix: add smarthost/);
});

test('a route password_file readable by others (0644) → 78 with a chmod fix', async () => {
  const site = await makeSite();
  const pw = writeFile(path.join(site.dir, 'secrets', 'isp'), 'hunter2\n', 0o644);
  site.route('isp', `smarthost = "smtp.example.net:587"\nauth.user = "me@example.net"\nauth.password_file = "${pw}"\n`);
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 3, /readable by others[\s\S]*fix: chmod 600/);
  // The secret itself never appears in the error.
  const r = await runCli(['config', 'check', '--config', site.configPath]);
  assert.not.match(r.stderr, /hunter2/);
});

test('a route with auth.user but no password_file → 78 pointing at the auth lines', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "smtp.example.net:587"\ntls = "starttls"\nauth.user = "me@example.net"\n');
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 3, /password_file/);
});

test('a typo in a route file (sender for senders) → 78 with a did-you-mean fix', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "smtp.example.net:587"\n\nsender = ["*@example.net"]\n');
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 3, /did you mean 'senders'/);
});

test('the column points at the key, also when it is indented', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '[smtp]', '   max_clients = "many"'], /max_clients/);
  await assertRefused(file, file, line, /'smtp\.max_clients' must be a whole number[\s\S]*fix: write e\.g\. max_clients = \d+/, 4);
  const syntax = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"', 'max_clients = 5'], /^max_clients/);
  const r = await runCli(['config', 'check', '--config', syntax.file]);
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, new RegExp(`${escape(syntax.file)}:\\d+:\\d+: TOML syntax error`));
});

test('an error in the second [[fetch]] entry of a route names that entry\'s line', async () => {
  const site = await makeSite();
  const pw = path.join(site.dir, 'secrets', 'pop');
  writeFile(pw, 'secret\n', 0o600);
  const text = [
    'smarthost = "smtp.example.net:587"',
    '[[fetch]]', 'server = "pop.example.net:995"', 'user = "a"', `password_file = "${pw}"`, 'deliver_to = "root"',
    '[[fetch]]', 'server = "pop.example.net:995"', 'user = "b"', `password_file = "${pw}"`, 'deliver_to = "root"', '  keep = "yes"',
  ].join('\n') + '\n';
  site.route('isp', text);
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 12, /'fetch\.keep' must be true or false[\s\S]*fix: write keep = true/, 3);
});

test('TIDEMAIL_CONFIG is used when --config is not given', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '[smtp]', 'max_message_size = "lots"'], /^max_message_size/);
  const r = await runCli(['config', 'check'], { env: { TIDEMAIL_CONFIG: file } });
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, new RegExp(`${escape(file)}:${line}\\b`));
});

if (fs.existsSync(SYSTEM_CONFIG)) {
  test.skip(`the embedded default (skipped: ${SYSTEM_CONFIG} exists on this machine)`);
} else {
  test('without any config file, config check says it uses the embedded default', async () => {
    const home = tmpDir();
    const env = { TIDEMAIL_CONFIG: undefined, HOME: home, XDG_STATE_HOME: path.join(home, 'state') };
    const r = await runCli(['config', 'check'], { env });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, /embedded default: ok \(0 route/);
    const show = await runCli(['config', 'show'], { env });
    assert.is(show.code, 0, show.stderr);
    const cfg = JSON.parse(show.stdout) as { file: unknown; stateDir: string; smtp: { listen: { host: string; port: number }[] } };
    assert.is(cfg.file, null);
    assert.equal(cfg.smtp.listen, [{ host: '127.0.0.1', port: 2525 }]);
    const want = process.getuid?.() === 0 ? '/var/lib/tidemail' : path.join(home, 'state', 'tidemail');
    assert.is(cfg.stateDir, want);
    // Checking must not create anything.
    assert.equal(fs.readdirSync(home), []);
  });
}

test.run();
