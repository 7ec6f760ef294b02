// The shipped link hooks call `tidemail link up|down NAME` with the right name for each system;
// run them as their callers would and check the daemon reacts.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { BIN, REPO, makeSite, startDaemon } from '../helpers/daemon.js';
import { sleep } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
const HOOKS = path.join(REPO, 'packaging', 'hooks');

/** A PATH where `tidemail` is our launcher. */
function binDir(): string {
  const d = tmpDir();
  fs.symlinkSync(BIN, path.join(d, 'tidemail'));
  return d;
}

const cases: [string, string[], Record<string, string>][] = [
  ['networkmanager-dispatcher', ['wan0', 'up'], {}],
  ['networkd-dispatcher', [], { STATE: 'routable', IFACE: 'wan0' }],
  ['ifupdown', [], { MODE: 'start', IFACE: 'wan0' }],
  ['ppp-ip-up', ['wan0'], {}],
  ['openwrt-hotplug', [], { ACTION: 'ifup', INTERFACE: 'wan0' }],
];

for (const [hook, args, env] of cases) {
  test(`${hook}: the route comes up and queued mail leaves`, async () => {
    const sh = keep(await startSmarthost());
    const site = await makeSite('[queue]\nretry_min = "1h"');
    // The route is named like the interface, so the hook's NAME matches it directly.
    site.route('wan0', smarthostRoute(sh.port, `online.file = "${path.join(tmpDir(), 'never')}"`));
    keep(await startDaemon(site));
    await sendMessage(site.port, 'a@tidemail.test', ['x@remote.example'], 'Subject: hook\r\n\r\nx\r\n');
    await sleep(300);
    assert.equal(sh.messages.length, 0);
    execFileSync(path.join(HOOKS, hook), args, {
      env: { PATH: `${binDir()}:${process.env.PATH}`, TIDEMAIL_CONFIG: site.configPath, ...env },
      stdio: 'ignore',
    });
    await sh.waitForMessages(1, 5000);
  });
}

test.run();
