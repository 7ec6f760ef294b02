// The heart of tidemail, with a real network: the smarthost lives in its own network namespace
// behind a veth pair. While the link is down, mail waits and not one connection attempt reaches
// the far side; the moment the link comes up (a netlink event, not a retry timer), it all goes.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { startFarSide, type FarSide } from '../helpers/far-side.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { canUseNetns, createVethNamespace, ip, type VethNamespace } from '../helpers/netns.js';
import { cleanupTmp } from '../helpers/tmp.js';

let veth: VethNamespace | null = null;
// Filled in by setup(); the names the tests below use.
let NS = '';
let HOST_IF = '';
let HOST_IP = '';
let FAR_IP = '';

let far: FarSide | null = null;
let daemon: RunningDaemon | null = null;

function setup(): void {
  veth = createVethNamespace('', 77);
  ({ ns: NS, hostIf: HOST_IF, hostIp: HOST_IP, farIp: FAR_IP } = veth);
}

function teardown(): void {
  far?.proc.kill('SIGKILL'); // a polite close waits for any half-dead session: the runner saw an open handle
  veth?.teardown();
}

async function inject(port: number, tags: string[]): Promise<void> {
  for (const tag of tags) {
    const r = await sendMessage(port, 'me@tidemail.test', ['you@far.example'], `Subject: ${tag}\r\nX-Tag: ${tag}\r\n\r\nhello\r\n`);
    assert.match(r, /^250 /);
  }
}

const canRun = canUseNetns();

if (!canRun) {
  test.skip('link up/down through a network namespace (needs root and iproute2)', () => undefined);
} else {
  test.before(async () => {
    setup();
    far = await startFarSide(NS, FAR_IP, 2525);
  });
  test.after(async () => {
    await daemon?.stop();
    teardown();
    cleanupTmp();
  });

  test('while the link is down: mail waits, zero connection attempts; link up: delivered at once', async () => {
    ip('link', 'set', HOST_IF, 'down');
    // retry_min of an hour: only the link event can make delivery happen within seconds.
    const site = await makeSite('[queue]\nretry_min = "1h"\nretry_max = "2h"');
    site.route('far', `smarthost = "${FAR_IP}:2525"\ntls = "none"\nonline.interface = "${HOST_IF}"\n`);
    daemon = await startDaemon(site);
    await inject(site.port, ['down-1', 'down-2', 'down-3']);
    await sleep(1500);
    assert.equal(far!.connections, 0, 'a connection reached the far side while the link was down');
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /far\s+offline/);
    assert.match(st.stdout, new RegExp(`${HOST_IF} is (down|lowerlayerdown)`));
    assert.match(st.stdout, /3 queued/);
    const q = await runCli(['mailq', '--config', site.configPath]);
    assert.match(q.stdout, /route far is offline/);

    ip('link', 'set', HOST_IF, 'up');
    await waitFor('delivery after link up', () => ['down-1', 'down-2', 'down-3'].every((t) => far!.tags.includes(t)), 3000, 20);
    await daemon.waitForLog(/link up route=far/);
    const st2 = await runCli(['status', '--config', site.configPath]);
    assert.match(st2.stdout, /far\s+ONLINE/);
    assert.match(st2.stdout, new RegExp(`${HOST_IF} is up with ${HOST_IP.replace(/\./g, '\\.')}`));
  });

  test('flapping: down, queue, up, delivered — three times over, never an attempt while down', async () => {
    const site = daemon!.site;
    for (let round = 0; round < 3; round++) {
      ip('link', 'set', HOST_IF, 'down');
      await daemon!.waitForLog(new RegExp(`(link down route=far[\\s\\S]*){${round + 1}}`), 5000);
      const before = far!.connections;
      const tags = [`flap${round}-a`, `flap${round}-b`];
      await inject(site.port, tags);
      await sleep(700);
      assert.equal(far!.connections, before, `round ${round}: connection attempt while down`);
      ip('link', 'set', HOST_IF, 'up');
      await waitFor(`round ${round} delivery`, () => tags.every((t) => far!.tags.includes(t)), 3000, 20);
    }
  });

  test('a hook call (`tidemail link up IFACE`) also flushes at once', async () => {
    const site = daemon!.site;
    ip('link', 'set', HOST_IF, 'down');
    await waitFor('route offline', async () => /far\s+offline/.test((await runCli(['status', '--config', site.configPath])).stdout), 5000, 100);
    await inject(site.port, ['hook-1']);
    ip('link', 'set', HOST_IF, 'up');
    const r = await runCli(['link', 'up', HOST_IF, '--config', site.configPath]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor('delivery after the hook', () => far!.tags.includes('hook-1'), 3000, 20);
  });
}

test.run();
