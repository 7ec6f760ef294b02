// Secret files are reread when they change (issue 18): a corrected smarthost password works at
// the next attempt without SIGHUP, the 535 message and `status` name the file and when it was
// read; a POP3 password broken on disk is noticed at the next fetch (`tidemail fetch` exits 78,
// naming the file) instead of the old password being used on.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { haveDovecot, startDovecot } from '../helpers/dovecot.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
test.after(() => cleanupTmp());

test('a corrected smarthost password file is used at the next attempt, no SIGHUP; 535 and status name the file', async () => {
  const sh = keep(await startSmarthost({ auth: { user: 'me', pass: 'right' } }));
  const site = await makeSite('[queue]\nretry_min = "1h"');
  const secret = `${site.dir}/secrets/isp`;
  writeSecret(secret, 'wrong\n');
  site.route('isp', smarthostRoute(sh.port, `allow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${secret}"`));
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'a@tidemail.test', ['p@remote.example'], 'Subject: auth\r\n\r\nx\r\n');
  const [line] = await d.waitForLog(/deferred to=<p@remote\.example>.*/);
  // Which file, and which read of it, the refused password came from.
  assert.match(line, new RegExp(`535.*password from ${secret.replace(/[/.]/g, '\\$&')}, read \\d{4}-\\d\\d-\\d\\dT`));
  const st = await runCli(['status', '--config', site.configPath]);
  assert.match(st.stdout, new RegExp(`secret ${secret.replace(/[/.]/g, '\\$&')}: read \\d+s ago`));

  writeSecret(secret, 'right\n'); // no SIGHUP
  const r = await runCli(['queue', 'flush', '--config', site.configPath]);
  assert.equal(r.code, 0, r.stderr);
  const [m] = await sh.waitForMessages(1, 15_000);
  assert.equal(m!.user, 'me');
  assert.not.match(d.logs(), /configuration reloaded/);
});

(haveDovecot() ? test : test.skip)('a POP3 password broken on disk is noticed at the next fetch: exit 78, the file named', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const site = await makeSite(`[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon" }`);
    const secret = path.join(site.dir, 'secrets', 'pop');
    writeSecret(secret, 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${secret}"\ndeliver_to = "alice"\n`);
    keep(await startDaemon(site));
    const ok = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);

    writeSecret(secret, 'broken\n'); // no SIGHUP: the next fetch must use it, and fail
    const bad = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(bad.code, 78, bad.stdout + bad.stderr);
    assert.match(bad.stdout, new RegExp(`isp/me: POP3 login .* refused .*password from ${secret.replace(/[/.]/g, '\\$&')}, read `));
    assert.not.match(bad.stdout, /broken/); // the secret itself is never shown

    writeSecret(secret, 'secret\n');
    const again = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(again.code, 0, again.stdout + again.stderr);
    await waitFor('status shows the secret read', async () => /secret .*secrets\/pop: read/.test((await runCli(['status', '--config', site.configPath])).stdout));
  } finally {
    await dovecot.stop();
  }
});

test.run();
