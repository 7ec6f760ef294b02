// A full disk: the SMTP client gets 452 (try later), sendmail exits 75 (EX_TEMPFAIL), and
// nothing that was accepted is lost. Uses a small tmpfs, so it needs root (as CI runs).

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot } from '../helpers/tmp.js';
import { growDisk, smallDisk, unmountDisks } from '../helpers/disk.js';
import { waitFor } from '../helpers/ports.js';

test.after(() => {
  unmountDisks();
  cleanupTmp();
});

if (!isRoot()) {
  test.skip('disk full (needs root for a tmpfs mount)', () => undefined);
} else {
  test('SMTP gets 452 when the disk is full; every 250 message is delivered later', async () => {
    const state = smallDisk(1024);
    const sh = await startSmarthost();
    // No reserve (queue_minfree, test/queue/free-space): this is the last line, the disk filling during DATA.
    const site = await makeSite('[queue]\nqueue_minfree = "0"', { stateDir: state });
    const d = await startDaemon(site);
    const accepted: string[] = [];
    let full = '';
    const filler = 'y'.repeat(998) + '\r\n';
    for (let i = 0; i < 200 && !full; i++) {
      const r = await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], `Subject: m${i}\r\nX-Tag: m${i}\r\n\r\n${filler.repeat(40)}`);
      if (r.startsWith('250')) accepted.push(`m${i}`);
      else full = r;
    }
    assert.match(full, /^452 4\.3\.1 /, `expected a 452 once the disk filled, got ${JSON.stringify(full)}`);
    assert.ok(accepted.length > 0, 'nothing was accepted before the disk filled');
    await d.waitForLog(/refused: disk full/);
    // The daemon is still there and still answers.
    const again = await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: tiny\r\n\r\nx\r\n');
    assert.match(again, /^(250|452) /);
    if (again.startsWith('250')) accepted.push('tiny');
    // sendmail into the full maildrop: EX_TEMPFAIL, and a clear message.
    const big = `Subject: big\n\n${'z'.repeat(1000)}\n`.repeat(600);
    const sm = await runCli(['-i', '-C', site.configPath, 'q@remote.example'], { argv0: 'sendmail', input: big });
    assert.equal(sm.code, 75, sm.stderr);
    assert.match(sm.stderr, /disk full/);
    assert.equal(fs.readdirSync(path.join(state, 'maildrop')).filter((n) => !n.startsWith('.tmp')).length, 0);
    // Now the admin frees space and adds a way out: every accepted message must arrive.
    growDisk(state, 8192);
    site.route('isp', smarthostRoute(sh.port));
    d.proc.kill('SIGHUP');
    await d.waitForLog(/configuration reloaded/).catch((e) => {
      throw new Error(`${e.message}\n${d.logs().slice(-3000)}`);
    });
    await runCli(['queue', 'flush', '--config', site.configPath]);
    const tags = () => new Set(sh.messages.map((m) => /X-Tag: (\S+)|Subject: (tiny)/.exec(m.raw.toString())?.slice(1).find(Boolean)));
    await waitFor('all accepted messages delivered', () => accepted.every((t) => tags().has(t)), 30_000, 100);
    await d.stop();
    await sh.close();
  });
}

test.run();
