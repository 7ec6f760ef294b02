// Route files of equal priority are tried in file-name byte order (as `ls` in the C locale), the
// same with every ICU build of node: the order is not localeCompare's, whose first call loads
// ICU's collation data (~3 MB of the daemon's RSS, issue 17).

import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadRoutes } from '../../src/routes/load.js';
import { smarthostRoute } from '../helpers/smarthost.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('priority first, then file-name byte order: B before a, lan-a before lan_b', () => {
  const dir = tmpDir();
  for (const [name, extra] of [['a', ''], ['B', ''], ['lan_b', ''], ['lan-a', ''], ['zz', 'priority = 10']] as const) {
    writeFile(path.join(dir, 'routes', `${name}.toml`), smarthostRoute(2525, extra));
  }
  assert.equal(loadRoutes(dir).map((r) => path.basename(r.file, '.toml')), ['zz', 'B', 'a', 'lan-a', 'lan_b']);
});

test.run();
