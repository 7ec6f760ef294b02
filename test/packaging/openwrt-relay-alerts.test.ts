// `tidemail uci` for the router's two issue-18 settings: list relay_domain / relay_recipients
// become [relay], the alert_* options [alerts]; the generated file passes `tidemail config check`
// and config show has the values in the TOML names.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

test('uci: relay_domain and alert_* options become [relay] and [alerts]', async () => {
  const dir = tmpDir();
  const rcpts = writeFile(path.join(dir, 'relay-recipients'), '@family.example\n');
  const uciFile = writeFile(path.join(dir, 'config/tidemail'), `
config tidemail 'main'
	option hostname 'gw.lan'
	option state_dir '${dir}/state'
	list relay_domain 'family.example'
	list relay_domain 'lan.example'
	option relay_recipients '${rcpts}'
	option alert_route_failing '1h'
	option alert_fetch_failing '0s'
	option alert_repeat '12h'
	list alert_command '/usr/bin/logger'
	list alert_command '-t'
	list alert_command 'tidemail-alert'
	option alert_url 'https://ntfy.example/router'
`);
  const out = path.join(dir, 'etc');
  const r = await runCli(['uci', '--file', uciFile, '--out', out]);
  assert.is(r.code, 0, r.stderr);
  const conf = path.join(out, 'tidemail.toml');
  const check = await runCli(['config', 'check', '--config', conf]);
  assert.is(check.code, 0, check.stdout + check.stderr);
  const shown = JSON.parse((await runCli(['config', 'show', '--json', '--config', conf])).stdout) as { file: string; settings: { key: string; value: unknown }[] }[];
  const main = Object.fromEntries(shown.find((f) => f.file === conf)!.settings.map((x) => [x.key, x.value]));
  assert.equal(main['relay.domains'], ['family.example', 'lan.example']);
  assert.is(main['relay.recipients'], rcpts);
  assert.is(main['alerts.route_failing'], '1h');
  assert.is(main['alerts.repeat'], '12h');
  assert.equal(main['alerts.command'], ['/usr/bin/logger', '-t', 'tidemail-alert']);
  assert.is(main['alerts.url'], 'https://ntfy.example/router');
  assert.ok(fs.readFileSync(conf, 'utf8').includes('[relay]'));
});

test.after(() => cleanupTmp());
test.run();
