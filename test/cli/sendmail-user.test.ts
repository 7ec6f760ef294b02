// An ordinary user (not root, not the daemon's user) can submit with sendmail while the daemon
// runs as its own unprivileged user, and cannot read the queue or other users' mail.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';

test.after(() => cleanupTmp());
const USER_UID = 1; // Debian's "daemon" user: exists everywhere, is neither root nor nobody

if (!isRoot()) {
  test.skip('sendmail as another user (needs root to switch users)', () => undefined);
} else {
  test('a local user submits through the maildrop; queue files stay private', async () => {
    const sh = await startSmarthost();
    const site = await makeSite();
    site.route('isp', smarthostRoute(sh.port));
    const d = await startDaemon(site);
    try {
      const r = await runCli(['-C', site.configPath, 'someone@remote.example'], { argv0: 'sendmail', input: 'Subject: from a user\n\nhi\n', uid: USER_UID, gid: USER_UID });
      assert.equal(r.code, 0, r.stderr);
      const [m] = await sh.waitForMessages(1);
      assert.equal(m!.from, 'daemon@tidemail.test');
      assert.match(m!.raw.toString(), /from userid 1\)/);
      const st = fs.statSync(path.join(site.stateDir, 'queue.sqlite'));
      assert.equal(st.mode & 0o077, 0, `queue.sqlite is mode ${(st.mode & 0o777).toString(8)}`);
      assert.equal(fs.statSync(path.join(site.stateDir, 'maildrop')).mode & 0o7777, 0o1733);
      // mailq works for everyone (as Postfix's does, through the public control socket), but the
      // queue database and the maildrop's files are not readable by the user.
      const q = await runCli(['mailq', '--config', site.configPath], { uid: USER_UID, gid: USER_UID });
      assert.equal(q.code, 0, q.stderr);
      const cat = spawnSync('cat', [path.join(site.stateDir, 'queue.sqlite')], { uid: USER_UID, gid: USER_UID });
      assert.not.equal(cat.status, 0, 'the user read queue.sqlite');
      const ls = spawnSync('ls', [path.join(site.stateDir, 'maildrop')], { uid: USER_UID, gid: USER_UID });
      assert.not.equal(ls.status, 0, 'the user listed the maildrop');
    } finally {
      await d.stop();
      await sh.close();
    }
  });
}

test.run();
