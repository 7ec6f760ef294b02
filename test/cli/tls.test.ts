// `tidemail tls selfsigned` (src/cli/tls.ts): the pair it writes is usable as tls_cert/tls_key
// by the real daemon, and the key is private.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

test('selfsigned writes cert.pem + a 0600 key.pem that the daemon serves STARTTLS with', async () => {
  const site = await makeSite('', { smtpToml: 'tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n' });
  const out = path.join(site.dir, 'tls');
  const r = await runCli(['tls', 'selfsigned', '--out', out, '--name', 'localhost', '--config', site.configPath]);
  assert.is(r.code, 0, r.stderr);
  assert.is(fs.statSync(path.join(out, 'key.pem')).mode & 0o777, 0o600);
  assert.match(r.stdout, /tls_cert = ".*cert\.pem"/);
  const again = await runCli(['tls', 'selfsigned', '--out', out, '--config', site.configPath]);
  assert.is(again.code, 73, 'an existing pair is not overwritten without --force');

  const d = await startDaemon(site);
  const c = await RawSmtp.connect(site.port);
  try {
    assert.match(await c.hello(), /STARTTLS/);
    // The certificate is its own trust anchor here, as a client that pins it would do.
    const t = await c.startTls(fs.readFileSync(path.join(out, 'cert.pem')));
    assert.match(await t.cmd('EHLO client.test'), /^250[ -]/);
    t.close();
  } finally {
    c.close();
    await d.stop();
  }
});

test.run();
