// The delivery helper runs from its CommonJS bundle (dist/bundle/privsep-helper.cjs, issue 17:
// ~1 MB less private memory for a process that lives as long as the daemon) when the package has
// it, and from dist/src when there is none or, in a checkout, when tsc wrote dist/src after the
// bundle was made (a stale bundle would run old root code). Started for real as the daemon starts
// it, in a package root of its own with a freshly built bundle, and made to deliver.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { LocalConfig } from '../../src/config/schema.js';
import type { DeliveryHelper } from '../../src/privsep/client.js';
import { helperEntry } from '../../src/privsep/helper-entry.js';
import { packageRoot } from '../helpers/package-root.js';
import { filesIn, makeUsers, removeUsers, type TestUser } from '../helpers/system-users.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

test.after(() => {
  if (isRoot()) removeUsers();
  cleanupTmp();
});

/** A dist/src/privsep + dist/bundle layout with the given files; a checkout when `src` is set. */
function layout(files: { bundle: boolean; src: boolean }): { dir: string; own: string; bundle: string } {
  const root = tmpDir('tidemail-layout-');
  const dir = path.join(root, 'dist', 'src', 'privsep');
  fs.mkdirSync(dir, { recursive: true });
  const own = path.join(dir, 'helper.js');
  const bundle = path.join(root, 'dist', 'bundle', 'privsep-helper.cjs');
  fs.writeFileSync(own, '');
  if (files.bundle) {
    fs.mkdirSync(path.dirname(bundle));
    fs.writeFileSync(bundle, '');
  }
  if (files.src) {
    fs.mkdirSync(path.join(root, 'src', 'privsep'), { recursive: true });
    fs.writeFileSync(path.join(root, 'src', 'privsep', 'helper.ts'), '');
  }
  return { dir, own, bundle };
}
const age = (file: string, seconds: number) => fs.utimesSync(file, new Date(Date.now() - seconds * 1000), new Date(Date.now() - seconds * 1000));

test('the bundle when there is one; dist/src without it or, in a checkout, when it is older than dist/src', () => {
  const none = layout({ bundle: false, src: true });
  assert.is(helperEntry(none.dir), none.own);
  const fresh = layout({ bundle: true, src: true });
  age(fresh.own, 60);
  assert.is(helperEntry(fresh.dir), fresh.bundle);
  const stale = layout({ bundle: true, src: true });
  age(stale.bundle, 60);
  assert.is(helperEntry(stale.dir), stale.own, 'tsc ran after the bundle: dist/src runs');
  const installed = layout({ bundle: true, src: false });
  age(installed.bundle, 60);
  assert.is(helperEntry(installed.dir), installed.bundle, 'a package has no src/: its bundle always runs');
});

if (!isRoot()) {
  test.skip('the helper from the bundle delivers (needs root)', () => undefined);
} else {
  const local = { minUid: 1000, maildir: '~/Maildir', mbox: '/nonexistent/%u', mda: ['/bin/true'], allowMailToCommands: [], allowMailToFiles: [] } as unknown as LocalConfig;
  const cmdline = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');

  async function startIn(root: string): Promise<DeliveryHelper> {
    const client = await import(pathToFileURL(path.join(root, 'dist', 'src', 'privsep', 'client.js')).href) as typeof import('../../src/privsep/client.js');
    return client.DeliveryHelper.start(local);
  }

  test('a package with the bundle runs the helper from it, and it delivers as the user', async () => {
    const [user] = makeUsers(1) as [TestUser];
    const root = packageRoot(true);
    const helper = await startIn(root);
    try {
      assert.equal(cmdline(helper.pid!).slice(1, 2), [path.join(root, 'dist', 'bundle', 'privsep-helper.cjs')]);
      const maildir = path.join(user.home, 'Maildir');
      const r = await helper.deliver({ user: user.name, uid: user.uid, kind: 'maildir', path: maildir, sender: 'x@remote.example', recipient: `${user.name}@tidemail.test` },
        () => Readable.from([Buffer.from('Subject: t\r\n\r\nfrom the bundle\r\n')]));
      assert.is(r.outcome, 'ok', r.message);
      const [f] = filesIn(path.join(maildir, 'new'));
      assert.is(fs.statSync(f!).uid, user.uid);
    } finally {
      helper.stop();
    }
  });

  test('a checkout whose bundle is older than dist/src runs the helper from dist/src', async () => {
    const root = packageRoot(true);
    fs.mkdirSync(path.join(root, 'src', 'privsep'), { recursive: true });
    fs.writeFileSync(path.join(root, 'src', 'privsep', 'helper.ts'), '');
    age(path.join(root, 'dist', 'bundle', 'privsep-helper.cjs'), 60);
    const helper = await startIn(root);
    try {
      assert.equal(cmdline(helper.pid!).slice(1, 2), [path.join(root, 'dist', 'src', 'privsep', 'helper.js')]);
    } finally {
      helper.stop();
    }
  });
}

test.run();
