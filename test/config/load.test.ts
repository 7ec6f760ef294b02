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

test('a missing secret is "does not exist" with a fix that cannot truncate a file; one a user cannot read is "cannot read", never "missing" (issue 18)', async () => {
  const dir = tmpDir();
  const pw = path.join(dir, 'secrets', 'isp');
  const config = writeFile(path.join(dir, 'tidemail.toml'), `state_dir = "${path.join(dir, 'state')}"\n`);
  writeFile(path.join(dir, 'routes', 'isp.toml'), `smarthost = "smtp.example.net:587"\nauth.user = "me@example.net"\nauth.password_file = "${pw}"\n`);
  const missing = await runCli(['config', 'check', '--config', config]);
  assert.is(missing.code, 78, missing.stderr);
  assert.match(missing.stderr, `file ${pw} does not exist`);
  assert.match(missing.stderr, /fix: create it \(mode 0600\) with the secret on one line: \(umask 077; set -C; cat > /);
  assert.not.match(missing.stderr, /\/dev\/null|install -m/);
  if (process.getuid?.() !== 0) return; // the rest needs a second user
  writeFile(pw, 'Secret-pw-9\n', 0o600); // root's, as setup leaves it for a root-run daemon
  const asUser = await runCli(['config', 'check', '--config', config], { uid: 12345, gid: 12345 });
  assert.is(asUser.code, 78, asUser.stderr);
  assert.match(asUser.stderr, `cannot read ${pw}: permission denied (it belongs to root, mode 0600)`);
  assert.match(asUser.stderr, /fix: run this as root/);
  assert.not.match(asUser.stderr, /does not exist|\/dev\/null|install -m|Secret-pw-9/);
  fs.chmodSync(path.dirname(pw), 0o700);
  const closedDir = await runCli(['config', 'check', '--config', config], { uid: 12345, gid: 12345 });
  assert.match(closedDir.stderr, `cannot read ${pw}: permission denied on a directory above it`);
  assert.not.match(closedDir.stderr, /does not exist|\/dev\/null/);
  assert.is((await runCli(['config', 'check', '--config', config])).code, 0, 'root reads it');
  assert.is(fs.readFileSync(pw, 'utf8'), 'Secret-pw-9\n');
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
    const show = await runCli(['config', 'show', '--json'], { env });
    assert.is(show.code, 0, show.stderr);
    const [defaults] = JSON.parse(show.stdout) as { file: string; settings: { key: string; value: unknown; from: string }[] }[];
    assert.is(defaults!.file, '(built-in defaults)');
    const value = (k: string) => defaults!.settings.find((x) => x.key === k);
    assert.equal(value('smtp.listen'), { key: 'smtp.listen', value: ['127.0.0.1:2525'], from: 'default' });
    const want = process.getuid?.() === 0 ? '/var/lib/tidemail' : path.join(home, 'state', 'tidemail');
    assert.is(value('state_dir')!.value, want);
    const text = await runCli(['config', 'show'], { env });
    assert.match(text.stdout, /^# no configuration file: the built-in defaults apply/);
    // Checking must not create anything.
    assert.equal(fs.readdirSync(home), []);
  });
}

test('a missing closing quote: the parser\'s words, then where the string starts', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', 'hostname = "gw.test', '[smtp]', 'listen = ["127.0.0.1:PORT"]'], /^hostname/);
  await assertRefused(file, file, line, new RegExp(`control characters are not allowed in strings\\n  unterminated string\\? the string starts at ${line}:12\\n  fix: close it with the same quote on line ${line}`));
});

test('auth.username in a route → did you mean user (a prefix is a guess too)', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "smtp.example.net:587"\n[auth]\nusername = "me@example.net"\n');
  await assertRefused(site.configPath, path.join(site.dir, 'routes', 'isp.toml'), 3, /'auth\.username' is not a known setting\n  fix: did you mean 'user'\?/, 1);
});

test('a key in the wrong table (max_message_size under [queue]) names the table it belongs to', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', '[queue]', 'max_message_size = "10M"'], /^max_message_size/);
  await assertRefused(file, file, line, /'queue\.max_message_size' is not a setting of \[queue\]; it belongs in \[smtp\]\n  fix: move it to \[smtp\]/, 1);
  // At the top of the file, before any table, too.
  const top = await mainConfig(['state_dir = "STATE"', 'retry_max = "4h"', '[smtp]', 'listen = ["127.0.0.1:PORT"]'], /^retry_max/);
  await assertRefused(top.file, top.file, top.line, /'retry_max' is not a setting of the top level; it belongs in \[queue\]/, 1);
});

test('a duration without a unit (no_route_recheck = 30) is refused with the fix; 0 and "30s" are fine', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', '[queue]', 'no_route_recheck = 30'], /^no_route_recheck/);
  await assertRefused(file, file, line, /'queue\.no_route_recheck' is 30, a number without a unit\n  fix: write "30s" or "30m"/, 1);
  const quoted = await mainConfig(['state_dir = "STATE"', '[queue]', 'no_route_recheck = "30"'], /^no_route_recheck/);
  const r = await runCli(['config', 'check', '--config', quoted.file]);
  assert.is(r.code, 78, r.stderr);
  assert.match(r.stderr, /'queue\.no_route_recheck' is "30", a number without a unit/);
  const good = await mainConfig(['state_dir = "STATE"', '[smtp]', 'greet_delay = 0', '[queue]', 'no_route_recheck = "30s"'], /^no_route_recheck/);
  const ok = await runCli(['config', 'check', '--config', good.file]);
  assert.is(ok.code, 0, ok.stderr);
});

test('[queue] queue_minfree: a size or "auto" (else 78 with file:line); unset, auto', async () => {
  const { file, line } = await mainConfig(['state_dir = "STATE"', '[smtp]', 'listen = ["127.0.0.1:PORT"]', '[queue]', 'queue_minfree = "lots"'], /^queue_minfree/);
  await assertRefused(file, file, line, /'queue\.queue_minfree' is not a size: "lots"\n  fix: write e\.g\. queue_minfree = "25M" .*, or "auto"/, 1);
  const shown = async (smtp: string[], queue: string[]) => {
    const c = await mainConfig(['state_dir = "STATE"', '[smtp]', ...smtp, '[queue]', ...queue], /^\[queue\]/);
    const r = await runCli(['config', 'show', '--config', c.file]);
    assert.is(r.code, 0, r.stderr);
    return /^queue_minfree = "(\w+)" +# (\S+)$/m.exec(r.stdout)?.slice(1).join(' ');
  };
  assert.is(await shown([], []), 'auto default');
  assert.match((await shown([], ['queue_minfree = "auto"'])) ?? '', /^auto tidemail\.toml:\d+:1$/);
  assert.match((await shown([], ['queue_minfree = "0"'])) ?? '', /^0 tidemail\.toml:\d+:1$/);
});

test('config show: the effective settings in the files\' own key names, each with file:line or default', async () => {
  const site = await makeSite('', { smtpToml: 'command_timeout = "2m"' });
  site.route('isp', 'smarthost = "smtp.example.net:587"\npriority = 10\n');
  const r = await runCli(['config', 'show', '--config', site.configPath]);
  assert.is(r.code, 0, r.stderr);
  const text = fs.readFileSync(site.configPath, 'utf8').split('\n');
  const lineOf = (re: RegExp) => text.findIndex((l) => re.test(l)) + 1;
  assert.match(r.stdout, new RegExp(`^# ${escape(site.configPath)}\\n`));
  assert.match(r.stdout, new RegExp(`^hostname = "tidemail\\.test" +# tidemail\\.toml:${lineOf(/^hostname/)}:1$`, 'm'));
  assert.match(r.stdout, new RegExp(`^\\[smtp\\]\\n`, 'm'));
  assert.match(r.stdout, new RegExp(`^command_timeout = "2m" +# tidemail\\.toml:${lineOf(/^command_timeout/)}:1$`, 'm'));
  // Keys left out of the file are shown too, with their default, in the file's notation.
  assert.match(r.stdout, /^session_timeout = "1h" +# default$/m);
  assert.match(r.stdout, /^max_message_size = "\d+[KMG]" +# default$/m);
  assert.match(r.stdout, /^\[queue\]\nretry_min = "\S+" +# default$/m);
  // The route file, in its own section.
  assert.match(r.stdout, new RegExp(`^# ${escape(path.join(site.dir, 'routes', 'isp.toml'))}\\n[\\s\\S]*^priority = 10 +# isp\\.toml:2:1$`, 'm'));
  assert.not.match(r.stdout, /commandTimeoutMs|stateDir|maxMessageSize/);
});

test.run();
