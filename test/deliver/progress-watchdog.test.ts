// The progress watchdog (src/deliver/progress-watchdog.ts): a link that stays "up" but stops
// passing packets in the middle of a message. TCP alone would retransmit into the void for
// many minutes; the watchdog sees our data outstanding with nothing acknowledged and nothing
// received for progress_timeout, cuts the connection, and the message is tried again at once
// on a new one — and, since the first transfer never completed, arrives exactly once.
// A peer that is merely slow to answer (all our data acknowledged) is not a stall.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startFarSide, type FarSide } from '../helpers/far-side.js';
import { canUseNetns, canUseNft, createVethNamespace, setLoss, type VethNamespace } from '../helpers/netns.js';
import { waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

const PORT = 2526;

function bigBody(tag: string): string {
  const line = 'x'.repeat(998) + '\r\n';
  return `Subject: ${tag}\r\nX-Tag: ${tag}\r\n\r\n${line.repeat(8 * 1024)}`; // 8 MB: more than the TCP windows hold
}

if (!canUseNetns()) {
  test.skip('progress watchdog on a black-holed link (needs root, iproute2 and nftables)', () => undefined);
} else {
  let v: VethNamespace;
  test.before(() => {
    v = createVethNamespace('w', 79);
  });
  test.after(() => {
    v.teardown();
    cleanupTmp();
  });

  test('a link that passes nothing mid-message: cut after progress_timeout, retried at once, delivered once', async () => {
    if (!canUseNft(v)) return console.log('  (skipped: nft not installed)');
    // The far side stops reading the first message for 1.5 s; while our data piles up
    // unacknowledged, the link turns into a black hole.
    const far: FarSide = await startFarSide(v.ns, v.farIp, PORT, ['--pause-read', '1500']);
    let d: RunningDaemon | null = null;
    try {
      const site = await makeSite('[queue]\nretry_min = "1h"\nretry_max = "2h"');
      site.route('far', `smarthost = "${v.farIp}:${PORT}"\ntls = "none"\nprogress_timeout = "3s"\nonline.interface = "${v.hostIf}"\n`);
      d = await startDaemon(site);
      await d.waitForLog(/link up route=far/);
      const r = await sendMessage(site.port, 'me@tidemail.test', ['you@far.example'], bigBody('stuck'));
      assert.match(r, /^250 /);
      await waitFor('the far side to stop reading', () => far.stalls.includes('read'), 15_000);
      setLoss(v, 100);
      // Cut after about progress_timeout, and due again at once (not at retry_min).
      const cut = await d.waitForLog(/deferred [^\n]*no progress for \d+ s[^\n]*/, 15_000);
      const retry = /retry=(\S+)/.exec(cut[0])?.[1];
      const at = cut.input.slice(0, cut.index).split('\n').pop()!.slice(0, 24);
      assert.ok(retry && Date.parse(retry) - Date.parse(at) < 1000, `retried at ${retry}, not at once`);
      setLoss(v, 0);
      // retry_min is an hour: only the immediate retry can deliver it now.
      await waitFor('the message at the far side', () => far.tags.includes('stuck'), 20_000);
      await d.waitForLog(/ delivered [^\n]*route=far/, 10_000);
      assert.equal(far.tags.filter((t) => t === 'stuck').length, 1, 'delivered twice');
    } finally {
      setLoss(v, 0);
      await d?.stop();
      far.stop();
    }
  });

  test('a peer slow to answer with everything acknowledged is not a stall', async () => {
    // Loopback, no loss: MAIL FROM is answered after 4 s, longer than progress_timeout.
    const sh = await startSmarthost({ mailDelayMs: 4000 });
    const site = await makeSite('');
    site.route('slow', `smarthost = "127.0.0.1:${sh.port}"\ntls = "none"\nprogress_timeout = "1s"\nstall_timeout = "0"\n`);
    const d = await startDaemon(site);
    try {
      const r = await sendMessage(site.port, 'me@tidemail.test', ['you@slow.example'], 'Subject: slow\r\n\r\nhello\r\n');
      assert.match(r, /^250 /);
      await sh.waitForMessages(1, 15_000);
      assert.not.match(d.logs(), /no progress for/);
      assert.equal(sh.connections, 1);
    } finally {
      await d.stop();
      await sh.close();
    }
  });
}

test.run();
