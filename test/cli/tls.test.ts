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

test('as root, selfsigned and dkim keygen give the key to the run user: a reload after dropping root reads them (issue 18)', async () => {
  if (process.getuid?.() !== 0) return;
  const site = await makeSite('', { smtpToml: 'tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"\n' });
  const out = path.join(site.dir, 'tls');
  const r = await runCli(['tls', 'selfsigned', '--out', out, '--name', 'localhost', '--config', site.configPath]);
  assert.is(r.code, 0, r.stderr);
  const d = await startDaemon(site); // runs as "nobody" (the site's user) after binding
  try {
    const nobody = fs.statSync(site.stateDir).uid;
    assert.is(fs.statSync(path.join(out, 'key.pem')).uid, nobody, 'key.pem not owned by the run user');
    assert.is(fs.statSync(path.join(out, 'key.pem')).mode & 0o777, 0o600);
    const k = await runCli(['dkim', 'keygen', 'tidemail.test', '--config', site.configPath]);
    assert.is(k.code, 0, k.stderr);
    const key = path.join(site.dir, 'dkim', 'tidemail.test.key');
    assert.is(fs.statSync(key).uid, nobody, 'DKIM key not owned by the run user');
    assert.is(fs.statSync(path.dirname(key)).uid, nobody, 'the dkim dir made for it is not traversable by the run user');
    // Renewed pair, then SIGHUP: the daemon (no longer root) must read the new key.
    const again = await runCli(['tls', 'selfsigned', '--out', out, '--name', 'localhost', '--force', '--config', site.configPath]);
    assert.is(again.code, 0, again.stderr);
    d.proc.kill('SIGHUP');
    await d.waitForLog(/TLS certificate reloaded/);
    assert.not.match(d.logs(), /TLS certificate not reloaded/);
  } finally {
    await d.stop();
  }
});

test.run();
