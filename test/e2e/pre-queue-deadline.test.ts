// "Deliver, then answer" past its deadline: the client already has its 250 when local delivery
// fails permanently, so the sender must get a DSN — never a silent "refused in session". A
// bounce itself (null sender) that fails is dropped with a log line saying so.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

test('past pre_queue_deadline: 250, then a permanent MDA failure → a DSN to the sender', async () => {
  const sh = keep(await startSmarthost());
  const dir = tmpDir('tidemail-mda-');
  fs.chmodSync(dir, 0o777); // the MDA may run as another user
  const go = path.join(dir, 'go');
  // Slow, then "user unknown": waits for the test to say go (after the 250), exits 67.
  const mda = writeFile(path.join(dir, 'slow-mda'), `#!/bin/sh\ncat >/dev/null\nwhile [ ! -e ${go} ]; do sleep 0.05; done\necho "no such mailbox" >&2\nexit 67\n`, 0o755);
  const site = await makeSite(`[local]\naliases = ""\ndelivery = "mda"\nmda = ["${mda}"]\npre_queue_deadline = "1s"\nusers = { admin = "daemon" }`);
  site.route('isp', smarthostRoute(sh.port));
  const d = keep(await startDaemon(site));
  const reply = await sendMessage(site.port, 'author@remote.example', ['admin@tidemail.test'], 'Subject: slow\r\nMessage-ID: <slow@x>\r\n\r\nx\r\n');
  assert.match(reply, /^250 /);
  await d.waitForLog(/still running at the deadline/);
  fs.writeFileSync(go, '');
  const [dsn] = await sh.waitForMessages(1, 15_000);
  assert.equal(dsn!.from, '');
  assert.equal(dsn!.to, ['author@remote.example']);
  assert.match(dsn!.raw.toString(), /Action: failed\r\nStatus: 5\.1\.1/);
  assert.match(dsn!.raw.toString(), /Message-ID: <slow@x>/);
  assert.not.match(d.logs(), /refused in session/);

  // A bounce (null sender) that fails the same way: no DSN of a DSN, but a line that says why.
  fs.rmSync(go);
  assert.match(await sendMessage(site.port, '', ['admin@tidemail.test'], 'Subject: a bounce\r\n\r\nx\r\n'), /^250 /);
  await d.waitForLog(/still running at the deadline[^\n]*\n(?:.*\n)*.*still running at the deadline/);
  fs.writeFileSync(go, '');
  await d.waitForLog(/dropped[^\n]*null sender/);
  assert.equal(sh.messages.length, 1);
});

test.run();
