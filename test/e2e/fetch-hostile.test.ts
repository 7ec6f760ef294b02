// A hostile POP3 server through the real daemon: it lists message 2 as 200 bytes and then streams
// it forever. The fetch is cut at the cap, nothing of it is queued (the state directory does not
// fill), no DELE and no QUIT go out, `tidemail status` and `tidemail fetch` name the message and
// the limit, and link flaps do not bring the daemon back for more (paused like a bad certificate).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { startHostilePop3 } from '../helpers/hostile-pop3.js';
import { waitFor } from '../helpers/ports.js';
import { tmpDir, writeSecret } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

const du = (dir: string) => Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);

test('endless RETR: cut at the cap, nothing queued, state dir does not fill, status names it, no retry on link flaps', async () => {
  const h = await startHostilePop3({ hostility: 'endless-retr', messages: 2, badMessage: 2 });
  try {
    const flag = path.join(tmpDir(), 'isp.up');
    const site = await makeSite();
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\nonline.file = "${flag}"\n[[fetch]]\nserver = "127.0.0.1:${h.port}"\ntls = "none"\nuser = "me"\nauth = "user"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\nkeep = false\n`);
    const d = keep(await startDaemon(site));
    const before = du(site.stateDir);
    fs.writeFileSync(flag, '');
    await d.waitForLog(/fetch failed account=isp\/me error=.*message 2 \(UIDL u2\) sent more than 65756 bytes \(LIST said 200 bytes\)/, 15_000);
    await waitFor('the connection closed by the daemon', () => h.closed === 1, 5000);
    const grown = du(site.stateDir) - before;
    console.log(`    state dir grew by ${grown} bytes; the server got ${h.sent()} bytes out before the cut`);
    assert.ok(grown < 8 * 1024 * 1024, `state dir grew by ${grown} bytes`);
    assert.ok(h.sent() < 16 * 1024 * 1024, `server sent ${h.sent()}`);
    // DELE 1 went out but counts only at a QUIT (RFC 1939 6), which a cut session never sends.
    assert.not.ok(h.commands.some((c) => /^(DELE 2|QUIT)/.test(c)), h.commands.join(', '));
    // Message 1 came before the bad one and is queued; nothing of message 2 is.
    await d.waitForLog(/accepted .*via=fetch account=isp\/me/);
    assert.equal((d.logs().match(/accepted .*via=fetch/g) ?? []).length, 1, 'only message 1 was queued');

    // The link flaps: no automatic retry of an account whose server just sent too much.
    const count = (re: RegExp) => (d.logs().match(re) ?? []).length;
    for (let i = 1; i <= 3; i++) {
      fs.rmSync(flag);
      await waitFor(`link down #${i}`, () => count(/link down route=isp/g) >= i, 5000);
      fs.writeFileSync(flag, '');
      await waitFor(`link up #${i + 1}`, () => count(/link up route=isp/g) >= i + 1, 5000);
    }
    assert.equal(h.connections, 1, 'retried on link events');
    // (A retry the link events started late would still show: `tidemail fetch` below must make
    // exactly the second connection.)

    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /isp\/me .*FAILING: message 2 \(UIDL u2\) sent more than 65756 bytes \(LIST said 200 bytes\); the connection was cut, nothing of it was queued, it is left on the server/);

    // `tidemail fetch` tries it once more (last), says the same, and exits 75.
    const r = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(r.code, 75, r.stdout + r.stderr);
    assert.match(r.stdout, /^isp\/me: message 2 \(UIDL u2\) sent more than 65756 bytes/m);
    assert.equal(r.stderr, '');
    assert.equal(h.connections, 2);
    assert.ok(du(site.stateDir) - before < 8 * 1024 * 1024);
    assert.equal((d.logs().match(/accepted .*via=fetch/g) ?? []).length, 1);
  } finally {
    await h.close();
  }
});

test.run();
