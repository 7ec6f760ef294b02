// Local delivery (src/deliver/local.ts) with a real resolver, aliases file and Maildirs in a temp
// dir: whatever got into the queue, an envelope recipient never becomes a path — only the exact
// [local] archive path is one — and an alias to an external "/path@x" is not queued as a path.

import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { loadConfig } from '../../src/config/load.js';
import { createLocalLane } from '../../src/deliver/local.js';
import type { DeliveryJob } from '../../src/deliver/transport.js';
import type { Envelope } from '../../src/queue/store.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const env = (i: number, recipient: string): Envelope => ({
  envId: `E${i}`, msgid: 'M1', recipient, status: 'queued', attempts: 0, nextAttempt: 0, lastError: null, warned: false,
  firstAttempt: null, sender: 'a@remote.example', created: Date.now(), size: 10, via: 'smtp',
});

test('queued "/path" recipients are refused (5.1.3) and nothing is created; the exact archive path is delivered; alias to "\\"/x\\"@far" is not forwarded', async () => {
  const dir = tmpDir('tidemail-local-');
  const archive = path.join(dir, 'archive');
  const aliases = writeFile(path.join(dir, 'aliases'), `evil: "\\"${dir}/q\\"@far.example", ok@far.example\n`);
  const cfgFile = writeFile(path.join(dir, 'tidemail.toml'), `hostname = "tidemail.test"\nstate_dir = "${dir}/state"\n[local]\naliases = "${aliases}"\narchive = "${archive}"\n`);
  const forwarded: string[] = [];
  const lane = createLocalLane(loadConfig(cfgFile), async (_m, a) => void forwarded.push(...a));
  const recipients = [`${dir}/victim`, `${dir}/v2@evil.example`, `${archive}x`, archive, 'evil@tidemail.test'];
  // Bare "/path" forms are local (no domain), so the local lane refuses them rather than a route.
  assert.equal(recipients.map((r) => lane.isLocal(r)), [true, false, true, true, true]);
  const job: DeliveryJob = { msgid: 'M1', sender: 'a@remote.example', size: 10, recipients: recipients.map((r, i) => env(i, r)), body: () => Readable.from([Buffer.from('Subject: x\r\n\r\nx\r\n')]) };
  const res = await lane.transport.deliver(job);
  for (const i of [0, 1, 2]) {
    assert.is(res.get(`E${i}`)?.outcome, 'permfail', recipients[i]);
    assert.match(res.get(`E${i}`)!.message, /5\.1\.3 .*not a mailbox address/);
  }
  assert.is(res.get('E3')?.outcome, 'ok');
  assert.is(fs.readdirSync(path.join(archive, 'new')).length, 1);
  assert.equal(forwarded, ['ok@far.example']);
  assert.equal(fs.readdirSync(dir).sort(), ['aliases', 'archive', 'tidemail.toml']);
});

test.run();
