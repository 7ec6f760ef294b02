// --help and --version through the installed entry point: every command in the main usage
// answers `--help` with its own usage and exit 0 (before its own parser can call the flag
// unknown), and --version is the version in package.json.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fs from 'node:fs';
import path from 'node:path';
import { REPO, runCli } from '../helpers/daemon.js';

const pkgVersion = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

test('tidemail --version and -V print the version from package.json', async () => {
  for (const flag of ['--version', '-V']) {
    const r = await runCli([flag]);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout, `tidemail ${pkgVersion}\n`);
  }
});

test('the main usage lists every command, queue salvage included', async () => {
  const r = await runCli(['--help']);
  assert.is(r.code, 0);
  for (const cmd of ['daemon', 'sendmail', 'mailq', 'queue', 'queue salvage', 'runq', 'status', 'link', 'fetch', 'config', 'user', 'tls', 'presets', 'setup', 'check', 'log', 'dkim', 'import-masqmail', 'uci', 'smtpd', 'rmail', 'newaliases', 'mailrm']) {
    assert.match(r.stdout, new RegExp(`^  ${cmd}( |$)`, 'm'), `${cmd} missing from the main usage`);
  }
  assert.match(r.stdout, /--version/);
});

test('every command and subcommand answers --help with its usage, exit 0', async () => {
  const cases: [string[], RegExp][] = [
    [['setup', 'laptop', '--help'], /^usage: tidemail setup PRESET[\s\S]*--root DIR/],
    [['setup', '--help'], /^usage: tidemail setup PRESET/],
    [['uci', '--help'], /^usage: tidemail uci /],
    [['import-masqmail', '--help'], /^usage: tidemail import-masqmail [\s\S]*--root DIR/],
    [['queue', 'salvage', '--help'], /^usage: tidemail queue salvage\n/],
    [['queue', '--help'], /^usage: tidemail queue list/],
    [['link', '--help'], /^usage: tidemail link up\|down NAME/],
    [['link', 'up', '-h'], /^usage: tidemail link up\|down NAME/],
    [['config', 'show', '--help'], /^usage: tidemail config check\|show/],
    [['user', 'add', '--help'], /^usage: tidemail user /],
    [['daemon', '--help'], /^usage: tidemail daemon/],
    [['status', '--help'], /^usage: tidemail status/],
    [['check', '--help'], /^usage: tidemail check /],
    [['log', '--help'], /^usage: tidemail log /],
    [['dkim', 'keygen', '--help'], /^usage: tidemail dkim keygen/],
    [['tls', '--help'], /^usage: tidemail tls selfsigned/],
    [['fetch', '--help'], /^usage: tidemail fetch/],
    [['presets', '--help'], /^usage: tidemail presets/],
    [['newaliases', '--help'], /^usage: tidemail newaliases/],
    [['help', 'uci'], /^usage: tidemail uci /],
  ];
  for (const [args, re] of cases) {
    const r = await runCli(args);
    assert.is(r.code, 0, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stdout, re, args.join(' '));
    assert.is(r.stderr, '', args.join(' '));
  }
});

test('under their own names: newaliases --help, mailq --help, sendmail --help', async () => {
  for (const argv0 of ['newaliases', 'mailq', 'sendmail', 'rmail', 'smtpd']) {
    const r = await runCli(['--help'], { argv0 });
    assert.is(r.code, 0, `${argv0}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^usage: ${argv0}`), argv0);
  }
});

test('an unknown option is still a usage error (64); no command at all is one too', async () => {
  const r = await runCli(['uci', '--nonsense']);
  assert.is(r.code, 64);
  assert.match(r.stderr, /usage: tidemail uci/);
  const none = await runCli([]);
  assert.is(none.code, 64);
});

test.run();
