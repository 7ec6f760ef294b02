// chownTree (root only): the state dir goes to the run user, but a file with a second name (a
// hard link the run user made to a root file, possible where fs.protected_hardlinks = 0) is
// left alone, so root never chowns /etc/shadow to the daemon's user.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lookupUser } from '../src/local/users.js';
import { chownTree } from '../src/privileges.js';
import { cleanupTmp, isRoot, tmpDir } from './helpers/tmp.js';

if (!isRoot()) {
  test.skip('chownTree (needs root)', () => undefined);
} else {
  test.after(() => cleanupTmp());

  test('chownTree skips a hard link to a root-owned file and chowns the rest', () => {
    const nobody = lookupUser('nobody')!;
    const secret = path.join(tmpDir('tidemail-secret-'), 'shadow');
    fs.writeFileSync(secret, 'root:$6$hash\n', { mode: 0o600 });
    const state = tmpDir('tidemail-state-');
    fs.mkdirSync(path.join(state, 'sub'));
    fs.writeFileSync(path.join(state, 'queue.sqlite'), '');
    fs.linkSync(secret, path.join(state, 'sub', 'planted'));
    fs.linkSync(secret, path.join(state, 'planted2'));
    chownTree(state, nobody);
    assert.is(fs.statSync(secret).uid, 0, 'root chowned the linked file to the run user');
    assert.is(fs.statSync(secret).gid, 0);
    assert.is(fs.statSync(path.join(state, 'queue.sqlite')).uid, nobody.uid);
    assert.is(fs.statSync(path.join(state, 'sub')).uid, nobody.uid);
    assert.is(fs.statSync(state).uid, nobody.uid);
  });
}

test.run();
