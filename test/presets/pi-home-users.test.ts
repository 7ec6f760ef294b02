// Issue 16's "done when": `tidemail setup pi-home` on a box with users pi, anna and ben (real
// users made here, with unique names) delivers each one's mail to their own ~/Maildir, owned by
// them, while the daemon that talks SMTP runs as tidemail (nobody where the package did not
// create it) — never as pi. --local-user only says who gets root's and postmaster's mail.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { filesIn, makeUsers, removeUsers, type TestUser } from '../helpers/system-users.js';
import { isRoot } from '../helpers/tmp.js';
import { applyPreset, assertApplied, passwordFile } from './apply.js';

const keep = stopAfterEach(test);
test.after(() => removeUsers());

/** The uid `tidemail` resolves to here: tidemail where the package made it, else nobody. */
function runUid(): number {
  for (const name of ['tidemail', 'nobody']) {
    try {
      return Number(execFileSync('id', ['-u', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    } catch {
      /* not here */
    }
  }
  throw new Error('neither tidemail nor nobody exists');
}

if (!isRoot() || fs.existsSync('/var/run/dovecot/lmtp')) {
  test.skip('pi-home with three users (needs root, and no Dovecot LMTP socket, which setup would pick)', () => undefined);
} else {
  test('pi-home: pi, anna and ben each get their own mail in their own ~/Maildir; root\'s goes to pi; the SMTP daemon runs as tidemail', async () => {
    const [pi, anna, ben] = makeUsers(3, { prefix: 'pi' }) as [TestUser, TestUser, TestUser];
    const sh = keep(await startSmarthost({ auth: { user: 'me@example.net', pass: 'pw' } }));
    const a = assertApplied(await applyPreset('pi-home', [
      '--smarthost', `127.0.0.1:${sh.port}`, '--tls', 'none', '--user', 'me@example.net', '--password-file', passwordFile('pw'),
      '--lan', '10.99.0.0/24', '--local-user', pi.name, '--hostname', 'pi.home.arpa',
    ]));
    assert.match(a.read('tidemail.toml'), /^user = "tidemail"/m);
    const d = keep(await startDaemon(a.site));
    const status = fs.readFileSync(`/proc/${d.proc.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${runUid()}\\s+${runUid()}\\s+${runUid()}\\s+${runUid()}$`, 'm'), 'the SMTP daemon runs as tidemail');
    assert.match(status, /^CapEff:\s+0+$/m);
    for (const u of [pi, anna, ben]) {
      assert.match(await sendMessage(a.port, 'friend@remote.example', [`${u.name}@pi.home.arpa`], `Subject: for ${u.name}\r\n\r\nhello\r\n`), /^250 /);
    }
    assert.match(await sendMessage(a.port, 'friend@remote.example', ['root@pi.home.arpa'], 'Subject: for root\r\n\r\nroot mail\r\n'), /^250 /);
    for (const [u, n] of [[pi, 2], [anna, 1], [ben, 1]] as const) {
      const files = await waitFor(`${n} message(s) in ~${u.name}/Maildir`, () => {
        const f = filesIn(path.join(u.home, 'Maildir', 'new'));
        return f.length === n ? f : null;
      }, 15_000);
      for (const f of files) assert.is(fs.statSync(f).uid, u.uid, `${f} belongs to ${u.name}`);
      assert.is(fs.statSync(path.join(u.home, 'Maildir')).uid, u.uid);
      const text = files.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
      assert.match(text, new RegExp(`Subject: for ${u.name}`));
      if (u === pi) assert.match(text, /Subject: for root/);
    }
  });
}

test.run();
