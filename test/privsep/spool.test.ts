// The helper's 'spool' kind (root only): root's and system accounts' /var/mail/NAME, written as
// the daemon's run user (from the settings at fork) with the spool dir's group and nothing else.
// Refused: a path that is not the [local] mbox template's expansion, a name with '/' or '..', a
// login user's name, and any spool request when the helper was started without a run user.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { LocalConfig } from '../../src/config/schema.js';
import { lookupUser } from '../../src/local/users.js';
import { DeliveryHelper } from '../../src/privsep/client.js';
import type { DeliveryRequest } from '../../src/privsep/protocol.js';
import { makeUsers, removeUsers, type TestUser } from '../helpers/system-users.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

const body = () => Readable.from([Buffer.from('Subject: t\r\n\r\nhello\r\n')]);
const spoolReq = (user: string, uid: number, p: string): DeliveryRequest => ({ user, uid, kind: 'spool', path: p, sender: 'x@remote.example', recipient: `${user}@tidemail.test` });

if (!isRoot()) {
  test.skip('the helper\'s spool deliveries (need root)', () => undefined);
} else {
  let helper: DeliveryHelper;
  let bare: DeliveryHelper;
  let login: TestUser;
  let spoolGroup: TestUser;
  const nobody = lookupUser('nobody')!;
  // root:G 2775, G a fresh group nobody is not in: only the helper's added group lets it write.
  const spool = tmpDir('tidemail-spool-');
  const outside = tmpDir('tidemail-outside-');
  fs.chmodSync(outside, 0o777);
  const config = { minUid: 1000, maildir: '~/Maildir', mbox: `${spool}/%u`, mda: ['/bin/true'], allowMailToCommands: ['forward'], allowMailToFiles: ['forward'] } as LocalConfig;
  test.before(async () => {
    [login] = makeUsers(1) as [TestUser];
    [spoolGroup] = makeUsers(1, { system: true, prefix: 'tg' }) as [TestUser];
    fs.chownSync(spool, 0, spoolGroup.gid);
    fs.chmodSync(spool, 0o2775);
    helper = await DeliveryHelper.start(config, nobody);
    bare = await DeliveryHelper.start(config);
  });
  test.after(() => {
    helper.stop();
    bare.stop();
    removeUsers();
    cleanupTmp();
  });

  test('root\'s spool file is written as the daemon\'s run user, with the spool dir\'s group', async () => {
    const r = await helper.deliver(spoolReq('root', 0, `${spool}/root`), body);
    assert.is(r.outcome, 'ok', r.message);
    const st = fs.statSync(`${spool}/root`);
    assert.is(st.uid, nobody.uid);
    assert.is(st.gid, spoolGroup.gid); // the setgid dir's group; nobody could create it only with that group
    assert.match(fs.readFileSync(`${spool}/root`, 'utf8'), /hello/);
  });

  test('refuses a path that is not the template\'s expansion, a name with "/" or "..", a login user', async () => {
    const cases: [string, number, string, RegExp][] = [
      ['root', 0, `${outside}/root`, /is not the \[local\] mbox spool path/],
      ['root', 0, `${spool}/daemon`, /is not the \[local\] mbox spool path/],
      ['root', 0, `${spool}/root/../x`, /is not the \[local\] mbox spool path/],
      ['../x', 0, `${spool}/../x`, /is not a mailbox name/],
      ['a/b', 0, `${spool}/a/b`, /is not a mailbox name/],
      ['..', 0, spool, /is not a mailbox name/],
      ['', 0, `${spool}/`, /is not a mailbox name/],
      ['root', 5, `${spool}/root`, /has uid 0, not 5/],
      [login.name, login.uid, `${spool}/${login.name}`, /is a login user/],
    ];
    fs.rmSync(`${spool}/root`);
    for (const [user, uid, p, why] of cases) {
      const r = await helper.deliver(spoolReq(user, uid, p), body);
      assert.is(r.outcome, 'tempfail', `${user} ${p}`);
      assert.match(r.message, /delivery helper refused: /);
      assert.match(r.message, why, `${user} ${p}: ${r.message}`);
    }
    assert.equal(fs.readdirSync(spool), []);
    assert.equal(fs.readdirSync(outside), []);
  });

  test('a helper started without the run user refuses every spool request', async () => {
    const r = await bare.deliver(spoolReq('root', 0, `${spool}/root`), body);
    assert.match(r.message, /refused: no run user for spool deliveries/);
    assert.not.ok(fs.existsSync(path.join(spool, 'root')));
  });
}

test.run();
