// The control commands as ordinary users and admins see them (issue 18): an ordinary user (a uid
// with no passwd entry) gets mailq, status and the history of their own messages through the
// public socket, and exit 77 for anything else; admin actions are in `tidemail log ID` with who;
// a failed SIGHUP reload logs one line and status says the config on disk is not loaded.

import fs from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => cleanupTmp());

const USER = { uid: 54321, gid: 54321 }; // exists nowhere: the test does not depend on users

(isRoot() ? test : test.skip)('an ordinary user: mailq, status and their own history work; hold is exit 77', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "127.0.0.1:9"\ntls = "none"\n');
  const d = keep(await startDaemon(site));
  const sent = await runCli(['-C', site.configPath, 'far@remote.example'], { argv0: 'sendmail', input: 'Subject: mine\n\nx\n', ...USER });
  assert.equal(sent.code, 0, sent.stderr);
  const [, id] = await d.waitForLog(/([0-9A-F]{16}): accepted .*uid=54321/);

  const q = await runCli(['mailq', '--config', site.configPath], USER);
  assert.equal(q.code, 0, q.stderr);
  assert.match(q.stdout, new RegExp(id!));
  const st = await runCli(['status', '--config', site.configPath], USER);
  assert.equal(st.code, 0, st.stderr);
  assert.match(st.stdout, /daemon:  running/);
  assert.not.match(st.stdout, /secret /);

  const log = await waitFor('own history', async () => {
    const r = await runCli(['log', id!, '--config', site.configPath], USER);
    return r.code === 0 ? r : null;
  });
  assert.match(log.stdout, /accepted/);
  assert.not.match(log.stderr + log.stdout, /SQLITE_CANTOPEN/);

  const hold = await runCli(['queue', 'hold', id!, '--config', site.configPath], USER);
  assert.equal(hold.code, 77, hold.stderr);
  assert.match(hold.stderr, /needs root or the daemon's user/);
  assert.not.match(hold.stderr, /at .*\.js:\d+/); // no stack trace

  // Root holds it: the history says who and when.
  const h = await runCli(['queue', 'hold', id!, '--config', site.configPath]);
  assert.equal(h.code, 0, h.stderr);
  const after = await waitFor('hold in the history', async () => {
    const r = await runCli(['log', id!, '--config', site.configPath]);
    return /held by admin {2}by=root/.test(r.stdout) ? r : null;
  });
  assert.match(after.stdout, /\d\d:\d\d:\d\dZ {2}held by admin {2}by=root/);
  // Another user's message is not in this user's history.
  const other = await runCli(['-C', site.configPath, 'far@remote.example'], { argv0: 'sendmail', input: 'Subject: root\n\nx\n' });
  assert.equal(other.code, 0, other.stderr);
  const [, rootId] = await d.waitForLog(/([0-9A-F]{16}): accepted .*uid=0\b/);
  const theirs = await runCli(['log', rootId!, '--config', site.configPath], USER);
  assert.equal(theirs.code, 66, theirs.stdout + theirs.stderr);
});

(isRoot() ? test : test.skip)('with the daemon down an ordinary user gets a clear exit 77, not SQLITE_CANTOPEN', async () => {
  const site = await makeSite();
  const d = await startDaemon(site);
  await d.stop();
  const r = await runCli(['log', '0123456789ABCDEF', '--config', site.configPath], USER);
  assert.equal(r.code, 77, r.stderr);
  assert.match(r.stderr, /readable only by root and the daemon's user/);
  const q = await runCli(['mailq', '--config', site.configPath], USER);
  assert.equal(q.code, 77, q.stderr);
});

test('a failed SIGHUP reload: one log line with the fix as a field; status says the config on disk is not loaded', async () => {
  const site = await makeSite();
  site.route('isp', 'smarthost = "127.0.0.1:9"\ntls = "none"\n');
  const d = keep(await startDaemon(site));
  site.route('isp', 'smarthost = "127.0.0.1:9"\ntls = "sometimes"\n');
  d.proc.kill('SIGHUP');
  const [line] = await d.waitForLog(/error reload failed.*/);
  assert.not.match(line, /\\n/);
  assert.match(line, /fix=/);
  const st = await runCli(['status', '--config', site.configPath]);
  assert.match(st.stdout + st.stderr, /config on disk not loaded: .*routes\/isp\.toml:\d+/);
});

test('SIGHUP with a changed [smtp] setting says in the log and status that it needs a restart', async () => {
  const site = await makeSite('', { smtpToml: 'max_recipients = 100' });
  const d = keep(await startDaemon(site));
  fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('max_recipients = 100', 'max_recipients = 5'));
  d.proc.kill('SIGHUP');
  await d.waitForLog(/need a restart.*settings=smtp\.max_recipients/);
  const st = await runCli(['status', '--config', site.configPath]);
  assert.match(st.stdout, /need a restart.*smtp\.max_recipients/);
});

(isRoot() ? test : test.skip)('SIGHUP with [local] unchanged does not ask for a restart of the delivery helper; a changed min_uid does', async () => {
  const site = await makeSite('[local]\nmin_uid = 1000\n');
  const d = keep(await startDaemon(site));
  d.proc.kill('SIGHUP');
  await d.waitForLog(/configuration reloaded/);
  const st = await runCli(['status', '--config', site.configPath]);
  assert.not.match(st.stdout + st.stderr, /need a restart/);
  fs.writeFileSync(site.configPath, fs.readFileSync(site.configPath, 'utf8').replace('min_uid = 1000', 'min_uid = 2000'));
  d.proc.kill('SIGHUP');
  await d.waitForLog(/need a restart.*local\.min_uid\/mbox\/mda \(delivery helper\)/);
});

test.run();
