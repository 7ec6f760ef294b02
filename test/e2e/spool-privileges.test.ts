// The daemon started as root keeps no supplementary group (no `mail`), and root's mail still
// lands in the [local] mbox spool: the helper writes it as the daemon's user, with the spool
// dir's group (a fresh group here, which the daemon's user is not in). Root only.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lookupUser } from '../../src/local/users.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { makeUsers, removeUsers, type TestUser } from '../helpers/system-users.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

if (!isRoot()) {
  test.skip('the daemon\'s groups and root\'s spool (need root)', () => undefined);
} else {
  test.after(() => removeUsers());

  /** A spool dir of a fresh group the daemon's user is not in (mode 2775, as /var/mail), and a site delivering there; root not aliased. */
  async function spoolSite(): Promise<{ group: TestUser; spool: string; site: TestSite }> {
    const [group] = makeUsers(1, { system: true, prefix: 'tg' }) as [TestUser];
    const spool = tmpDir('tidemail-spool-');
    fs.chownSync(spool, 0, group.gid);
    fs.chmodSync(spool, 0o2775);
    const aliases = writeFile(path.join(tmpDir(), 'aliases'), '# none: root is root\n');
    const site = await makeSite(`[local]\naliases = "${aliases}"\ndelivery = "mbox"\nmbox = "${spool}/%u"\n`);
    return { group, spool, site };
  }

  test('started as root: the daemon\'s only group is its own, and mail to root lands in the spool as the daemon\'s user', async () => {
    const nobody = lookupUser('nobody')!;
    const { group, spool, site } = await spoolSite();
    const d = keep(await startDaemon(site));
    const status = fs.readFileSync(`/proc/${d.proc.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${nobody.uid}\\s`, 'm'), 'not the daemon process');
    assert.is(/^Groups:\s*(.*)$/m.exec(status)![1]!.trim(), String(nobody.gid));
    assert.match(await sendMessage(site.port, 'x@remote.example', ['root@tidemail.test'], 'Subject: to root\r\n\r\nfor root\r\n'), /^250 /);
    const file = path.join(spool, 'root');
    await waitFor('root\'s spool file', () => fs.existsSync(file) && /for root/.test(fs.readFileSync(file, 'utf8')));
    assert.is(fs.statSync(file).uid, nobody.uid);
    assert.is(fs.statSync(file).gid, group.gid);
  });

  test('runq as root with no daemon delivers root\'s mail to the spool the same way (its helper knows the run user)', async () => {
    const nobody = lookupUser('nobody')!;
    const { spool, site } = await spoolSite();
    const s = await runCli(['-C', site.configPath, 'root'], { argv0: 'sendmail', input: 'Subject: to root\n\nqueued for root\n' });
    assert.is(s.code, 0, s.stderr);
    const r = await runCli(['-C', site.configPath], { argv0: 'runq' });
    assert.is(r.code, 0, r.stderr + r.stdout);
    const file = path.join(spool, 'root');
    assert.ok(fs.existsSync(file), `nothing in the spool: ${r.stdout}${r.stderr}`);
    assert.match(fs.readFileSync(file, 'utf8'), /queued for root/);
    assert.is(fs.statSync(file).uid, nobody.uid);
  });
}

test.run();
