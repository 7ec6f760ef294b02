// `tidemail check` on [alerts]: what is watched, a command that is missing or not executable
// (FAIL with the fix), a URL shown by its origin only (an ntfy topic is a secret), and nothing
// run or POSTed by the check itself.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

test('check reports the alert actions without running them', async () => {
  let posts = 0;
  const server = http.createServer((_req, res) => {
    posts++;
    res.writeHead(200).end();
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
  try {
    const dir = tmpDir();
    const ran = path.join(dir, 'ran');
    const good = writeFile(path.join(dir, 'notify.sh'), `#!/bin/sh\ntouch ${ran}\n`, 0o755);
    const noexec = writeFile(path.join(dir, 'noexec.sh'), '#!/bin/sh\n', 0o644);
    const run = async (cmd: string) => {
      const site = await makeSite(`[alerts]\nroute_failing = "1h"\nfetch_failing = "0s"\ncommand = ["${cmd}"]\nurl = "http://127.0.0.1:${port}/secret-topic-x1"\n`);
      const r = await runCli(['check', '--config', site.configPath], { timeoutMs: 60_000 });
      return r.stdout + r.stderr;
    };
    let out = await run(good);
    assert.match(out, /OK\s+alerts\s+watching route failing > 1h, fetch FAILING; repeat every 6h, cleared notices on/);
    assert.match(out, new RegExp(`OK\\s+alerts\\s+command ${good.replace(/[.]/g, '\\.')} is executable`));
    assert.match(out, /OK\s+alerts\s+url http:\/\/127\.0\.0\.1:\d+\/… resolves \(not POSTed by check\)/);
    assert.not.match(out, /secret-topic-x1/);
    out = await run(noexec);
    assert.match(out, /FAIL\s+alerts\s+command .*noexec\.sh is not an executable file \(mode 644\)\n\s+fix: chmod 755/);
    out = await run(path.join(dir, 'missing.sh'));
    assert.match(out, /FAIL\s+alerts\s+command .*missing\.sh cannot be found \(ENOENT\)/);
    assert.is(posts, 0, 'nothing POSTed');
    assert.not.ok(fs.existsSync(ran), 'nothing run');
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test.after(() => cleanupTmp());
test.run();
