// OpenWrt, as far as it can be checked without the SDK: the UCI → TOML generator (its output
// must load in the real config loader), the procd init script run against stand-ins for
// OpenWrt's shell functions, the daemon started with the command it registers, the launcher
// wrapper under its ALTERNATIVES names, and the hotplug hook flushing the queue on ifup.

import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';
import { parseUci } from '../../src/cli/uci.js';

const keep = stopAfterEach(test);
const FILES = path.join(REPO, 'packaging/openwrt/tidemail/files');
const INIT = path.join(FILES, 'tidemail.init');
const WRAPPER = path.join(FILES, 'tidemail.wrapper');
const HOTPLUG = path.join(REPO, 'packaging/hooks/openwrt-hotplug');
const UCI_JS = path.join(REPO, 'dist/src/cli/uci.js');

/** `tidemail uci ARGS` (run through its module: main.ts's dispatch line is the lead's to add). */
function uci(args: string[], as?: { uid: number; gid: number }) {
  const code = `const m = await import(${JSON.stringify(UCI_JS)}); const { reportError } = await import(${JSON.stringify(path.join(REPO, 'dist/src/cli/exit.js'))});
    try { process.exitCode = await m.runUci(process.argv.slice(1)); } catch (e) { process.exitCode = reportError('tidemail', e); }`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', code, '--', ...args], { encoding: 'utf8', ...(as ?? {}) });
}

/** A shell script standing in for `tidemail` in the init script: runs the generator. */
function uciShim(): string {
  const dir = tmpDir();
  const code = `const m = await import(${JSON.stringify(UCI_JS)}); process.exitCode = await m.runUci(process.argv.slice(1));`;
  return writeFile(path.join(dir, 'tidemail'), `#!/bin/sh\n[ "$1" = uci ] || exit 64\nshift\nexec "${process.execPath}" --input-type=module -e '${code}' -- "$@"\n`, 0o755);
}

interface Sample {
  dir: string;
  uciFile: string;
  out: string;
  port: number;
}

/** A router's /etc/config/tidemail: one route only a hook brings up, one disabled, one on wwan. */
async function sample(smarthostPort = 2, opts: { enabled?: string } = {}): Promise<Sample> {
  const dir = tmpDir();
  const port = await freePort();
  const secret = writeSecret(path.join(dir, 'secret'), 'pw\n');
  const uciFile = writeFile(
    path.join(dir, 'config/tidemail'),
    `
config tidemail 'main'
	option enabled '${opts.enabled ?? '1'}'
	option max_heap_mb '24'
	option lite_mode '1'
	option hostname 'gw.lan'
	option state_dir '${dir}/state'
	option user 'nobody'
	list listen '127.0.0.1:${port}'
	list trusted_network '127.0.0.0/8'
	list trusted_network "::1/128"   # double quotes work too
	list local_domain 'gw.lan'
	option retry_min '1h'

config route 'wan0'
	option smarthost '127.0.0.1:${smarthostPort}'
	option tls 'none'
	option online_file '${dir}/never'
	list sender '*@gw.lan'
	option rewrite_from 'me@example.net'
	option priority '10'

config route 'backup'
	option enabled '0'
	option smarthost 'smtp.example.org:465'
	option interface 'wwan'

config route 'lte'
	option smarthost 'smtp.example.org:587'
	option interface 'wwan'
	option auth_user 'it'\\''s me'
	option password_file '${secret}'
	list recipient '*@example.org'
`,
  );
  return { dir, uciFile, out: path.join(dir, 'etc'), port };
}

test('uci → toml: the generated files load in the real config loader with the UCI values', async () => {
  const s = await sample(2526);
  const r = uci(['--file', s.uciFile, '--out', s.out]);
  assert.is(r.status, 0, r.stderr);
  assert.equal(fs.readdirSync(path.join(s.out, 'routes')).sort(), ['lte.toml', 'wan0.toml']);
  // config show --json: every setting of every file, in the files' own key names.
  const shown = JSON.parse(execFileSync(process.execPath, [path.join(REPO, 'bin/tidemail.js'), 'config', 'show', '--json', '--config', path.join(s.out, 'tidemail.toml')], { encoding: 'utf8' })) as { file: string; settings: { key: string; value: unknown }[] }[];
  const of = (file: string) => Object.fromEntries(shown.find((f) => path.basename(f.file) === file)!.settings.map((x) => [x.key, x.value]));
  const main = of('tidemail.toml');
  assert.is(main.hostname, 'gw.lan');
  assert.is(main.state_dir, path.join(s.dir, 'state'));
  assert.equal(main['smtp.listen'], [`127.0.0.1:${s.port}`]);
  assert.equal(main['smtp.trusted_networks'], ['127.0.0.0/8', '::1/128']);
  assert.is(main['queue.retry_min'], '1h');
  assert.equal(shown.map((f) => path.basename(f.file)).sort(), ['lte.toml', 'tidemail.toml', 'wan0.toml']);
  const wan0 = of('wan0.toml');
  const lte = of('lte.toml');
  assert.is(wan0.priority, 10);
  assert.equal(wan0.senders, ['*@gw.lan']);
  assert.match(JSON.stringify(wan0), /me@example\.net/);
  assert.match(JSON.stringify(lte), /wwan/);
  assert.match(JSON.stringify(lte), /it's me/);
  assert.equal(lte.recipients, ['*@example.org']);
});

test('uci → toml: unchanged files are not rewritten; removed routes go; hand-written files stay', async () => {
  const s = await sample();
  assert.is(uci(['--file', s.uciFile, '--out', s.out]).status, 0);
  const conf = path.join(s.out, 'tidemail.toml');
  const before = fs.statSync(conf).mtimeMs;
  const manual = writeFile(path.join(s.out, 'routes/manual.toml'), 'kind = "local-only"\n');
  const again = uci(['--file', s.uciFile, '--out', s.out]);
  assert.is(again.status, 0, again.stderr);
  assert.is(again.stdout, '', 'nothing should be rewritten');
  assert.is(fs.statSync(conf).mtimeMs, before);
  // The lte section is disabled in UCI: its file is removed, the hand-written route is not.
  fs.writeFileSync(s.uciFile, fs.readFileSync(s.uciFile, 'utf8').replace("config route 'lte'\n", "config route 'lte'\n\toption enabled '0'\n"));
  assert.is(uci(['--file', s.uciFile, '--out', s.out]).status, 0);
  assert.equal(fs.readdirSync(path.join(s.out, 'routes')).sort(), ['manual.toml', 'wan0.toml']);
  assert.ok(fs.existsSync(manual));
  // A hand-written tidemail.toml is left alone, with a warning.
  fs.writeFileSync(conf, 'hostname = "mine"\n');
  const hand = uci(['--file', s.uciFile, '--out', s.out]);
  assert.is(hand.status, 0);
  assert.match(hand.stderr, /hand-written/);
  assert.is(fs.readFileSync(conf, 'utf8'), 'hostname = "mine"\n');
});

test('uci → toml: an unknown option is a configuration error naming file:line and the fix', async () => {
  const s = await sample();
  fs.appendFileSync(s.uciFile, "\toption smarthots 'x:25'\n");
  const r = uci(['--file', s.uciFile, '--out', s.out]);
  const line = fs.readFileSync(s.uciFile, 'utf8').split('\n').findIndex((l) => l.includes('smarthots')) + 1;
  assert.is(r.status, 78, r.stderr);
  assert.ok(r.stderr.includes(`${s.uciFile}:${line}`), r.stderr);
  assert.match(r.stderr, /smarthots[\s\S]*\n  fix: use one of/);
  assert.not.ok(fs.existsSync(path.join(s.out, 'tidemail.toml')), 'nothing written on error');
});

test('uci → toml: every value is checked by the real loaders first; a bad one is an error at /etc/config/tidemail:LINE with a UCI fix, and nothing is written (issue 18)', async () => {
  const s = await sample();
  const text = fs.readFileSync(s.uciFile, 'utf8');
  const lineOf = (t: string, needle: string) => t.split('\n').findIndex((l) => l.includes(needle)) + 1;
  const cases: [string, string, RegExp][] = [
    [text.replace("option tls 'none'", "option tls 'ssl'"), "option tls 'ssl'", /option tls: is "ssl", which is not one of "starttls", "implicit", "none"\n\s+fix: use one of those values, e\.g\. option tls 'starttls'/],
    [text.replace("option retry_min '1h'", "option retry_min '30'"), "option retry_min '30'", /option retry_min: is "30", a number without a unit[\s\S]*option retry_min '30s'/],
    [text.replace("list trusted_network '127.0.0.0/8'", "list trusted_network 'lan'"), "list trusted_network 'lan'", /list trusted_network: entry "lan" is not an address or CIDR/],
    [text.replace(/option password_file '[^']*'/, "option password_file '/nonexistent/secret'"), "option password_file '/nonexistent/secret'", /option password_file: file \/nonexistent\/secret does not exist/],
    // Read by the init script, not the loader: checked here all the same.
    [text.replace("option max_heap_mb '24'", "option max_heap_mb '24M'"), "option max_heap_mb '24M'", /"max_heap_mb" must be a whole number, not "24M"\n\s+fix: write option max_heap_mb '10'/],
    [text.replace("option enabled '0'", "option enabled 'maybe'"), "option enabled 'maybe'", /"enabled" must be 1 or 0, not "maybe"/],
  ];
  for (const [bad, needle, problem] of cases) {
    fs.writeFileSync(s.uciFile, bad);
    const r = uci(['--file', s.uciFile, '--out', s.out]);
    assert.is(r.status, 78, r.stderr);
    assert.ok(r.stderr.includes(`${s.uciFile}:${lineOf(bad, needle)}: `), `${needle}:\n${r.stderr}`);
    assert.match(r.stderr, problem);
    assert.not.match(r.stderr, /\.uci-check|\n\s+at /, r.stderr);
    assert.not.ok(fs.existsSync(path.join(s.out, 'tidemail.toml')), 'nothing written on error');
    assert.equal(fs.readdirSync(path.join(s.out, 'routes')), [], 'no route file, and no staged file left behind');
  }
  fs.writeFileSync(s.uciFile, text);
  if (process.getuid?.() === 0) {
    // Not root, and the output dir is root's: said in words with the fix, exit 77.
    fs.mkdirSync(s.out, { recursive: true, mode: 0o755 });
    const denied = uci(['--file', s.uciFile, '--out', s.out], { uid: 12345, gid: 12345 });
    assert.is(denied.status, 77, denied.stderr);
    assert.is(denied.stderr, `tidemail: cannot write ${s.out}: permission denied\n  fix: run it as root (/etc/init.d/tidemail does), or pass --out DIR\n`);
  }
  assert.is(uci(['--file', s.uciFile, '--out', s.out]).status, 0);
});

/** OpenWrt's config_* (functions.sh) and procd_* (procd.sh) helpers, recording what the script registers. */
function fakeOpenwrt(s: Sample, log: string): string {
  const vars: string[] = [];
  const names: string[] = [];
  let anon = 0;
  for (const sec of parseUci(fs.readFileSync(s.uciFile, 'utf8'), s.uciFile)) {
    const name = sec.name ?? `cfg${++anon}`;
    names.push(name);
    vars.push(`CONFIG_${name}_TYPE='${sec.type}'`);
    for (const [k, { value }] of sec.options) vars.push(`CONFIG_${name}_${k}='${(Array.isArray(value) ? value.join(' ') : value).replace(/'/g, `'\\''`)}'`);
  }
  return `
config_load() { ${vars.join('; ')}; CONFIG_SECTIONS='${names.join(' ')}'; }
config_get() { eval "$1=\\"\\\${CONFIG_$2_$3:-$4}\\""; }
config_get_bool() { local v; config_get v "$2" "$3" "$4"; case "$v" in 1|on|true|yes|enabled) eval "$1=1" ;; *) eval "$1=0" ;; esac; }
config_foreach() { local s t; for s in $CONFIG_SECTIONS; do eval "t=\\$CONFIG_\${s}_TYPE"; [ "$t" = "$2" ] && "$1" "$s"; done; }
procd_open_instance() { echo "open_instance" >> "${log}"; }
procd_close_instance() { echo "close_instance" >> "${log}"; }
procd_set_param() { local k="$1"; shift; if [ "$k" = command ]; then printf '%s\\n' "$@" > "${log}.command"; fi; echo "set_param $k $*" >> "${log}"; }
procd_add_reload_trigger() { echo "reload_trigger $*" >> "${log}"; }
procd_add_interface_trigger() { echo "interface_trigger $*" >> "${log}"; }
procd_send_signal() { echo "send_signal $*" >> "${log}"; }
`;
}

/** Sources the init script as rc.common would and calls FUNCS; returns the recorded calls. */
function runInit(s: Sample, funcs: string[]): { status: number | null; stderr: string; calls: string[]; command: string[] } {
  const log = path.join(tmpDir(), 'procd.log');
  fs.writeFileSync(log, '');
  const script = `${fakeOpenwrt(s, log)}
. "${INIT}"
TIDEMAIL="${uciShim()}"; UCI_FILE="${s.uciFile}"; TOML_DIR="${s.out}"; NODE="${process.execPath}"; PROG="${path.join(REPO, 'bin/tidemail.js')}"
${funcs.join('\n')}
`;
  const r = spawnSync('sh', ['-c', script], { encoding: 'utf8' });
  const cmdFile = `${log}.command`;
  return { status: r.status, stderr: r.stderr, calls: fs.readFileSync(log, 'utf8').split('\n').filter(Boolean), command: fs.existsSync(cmdFile) ? fs.readFileSync(cmdFile, 'utf8').split('\n').filter(Boolean) : [] };
}

test('shell scripts parse (sh -n): init script, hotplug hook, launcher wrapper', () => {
  for (const f of [INIT, HOTPLUG, WRAPPER]) {
    const r = spawnSync('sh', ['-n', f], { encoding: 'utf8' });
    assert.is(r.status, 0, `${f}: ${r.stderr}`);
  }
});

test('init script: one respawning instance with the UCI heap limit; reload and interface triggers', async () => {
  const s = await sample();
  const r = runInit(s, ['start_service', 'service_triggers']);
  assert.is(r.status, 0, r.stderr);
  assert.is(r.calls.filter((c) => c === 'open_instance').length, 1);
  assert.ok(r.command.includes('--max-old-space-size=24'), r.command.join(' '));
  assert.ok(r.command.includes('--lite-mode'), r.command.join(' '));
  assert.equal(r.command.slice(-3), ['daemon', '--config', path.join(s.out, 'tidemail.toml')]);
  assert.ok(r.calls.some((c) => c.startsWith('set_param respawn')), r.calls.join('\n'));
  assert.ok(r.calls.includes('reload_trigger tidemail'));
  // The WAN, and wwan once although two routes name it.
  assert.equal(r.calls.filter((c) => c.startsWith('interface_trigger')).sort(), ['interface_trigger interface.* wan /etc/init.d/tidemail reload', 'interface_trigger interface.* wwan /etc/init.d/tidemail reload']);
  // start_service generated the TOML first.
  assert.ok(fs.existsSync(path.join(s.out, 'routes/wan0.toml')));

  const reload = runInit(s, ['reload_service']);
  assert.equal(reload.calls, ['send_signal tidemail * HUP']);
});

test('init script: enabled 0 starts nothing', async () => {
  const s = await sample(2, { enabled: '0' });
  const r = runInit(s, ['start_service']);
  assert.is(r.status, 0, r.stderr);
  assert.equal(r.calls, []);
});

test('the daemon runs with the registered command; sendmail via the wrapper waits; the hotplug ifup flushes it', async () => {
  const sh = keep(await startSmarthost());
  const s = await sample(sh.port);
  const r = runInit(s, ['start_service']);
  assert.is(r.status, 0, r.stderr);
  const [cmd, ...args] = r.command;
  const proc = spawn(cmd!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const exited = new Promise((res) => proc.on('exit', res));
  try {
    await waitFor('daemon ready', () => /daemon ready/.test(out) || proc.exitCode !== null, 15_000);
    assert.match(out, /daemon ready/);
    // The wrapper under the names ALTERNATIVES gives it, on the router's PATH.
    const bin = tmpDir();
    for (const n of ['tidemail', 'sendmail', 'mailq']) fs.symlinkSync(WRAPPER, path.join(bin, n));
    const env = { ...process.env, PATH: `${bin}:${process.env.PATH}`, TIDEMAIL_HOME: REPO, TIDEMAIL_CONFIG: path.join(s.out, 'tidemail.toml') };
    const sent = spawnSync(path.join(bin, 'sendmail'), ['-i', 'x@remote.example'], { env, input: 'Subject: router\n\nx\n', encoding: 'utf8' });
    assert.is(sent.status, 0, sent.stderr);
    await waitFor('queued', () => /x@remote\.example/.test(spawnSync(path.join(bin, 'mailq'), [], { env, encoding: 'utf8' }).stdout), 10_000, 200);
    assert.is(sh.messages.length, 0);
    // hotplug-call sources the hook in a subshell with ACTION and INTERFACE set.
    const down = spawnSync('sh', ['-c', `. "${HOTPLUG}"`], { env: { ...env, ACTION: 'ifdown', INTERFACE: 'wan0' }, encoding: 'utf8' });
    assert.is(down.status, 0, down.stderr);
    const up = spawnSync('sh', ['-c', `. "${HOTPLUG}"`], { env: { ...env, ACTION: 'ifup', INTERFACE: 'wan0' }, encoding: 'utf8' });
    assert.is(up.status, 0, up.stderr);
    const [m] = await sh.waitForMessages(1, 10_000);
    assert.is(m!.from, 'me@example.net', 'rewrite_from from UCI applied');
  } finally {
    proc.kill('SIGTERM');
    await exited;
  }
});

test.run();
