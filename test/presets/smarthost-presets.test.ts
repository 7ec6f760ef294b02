// The presets that send through a smarthost (laptop, router, satellite, pi-home): each applied
// with `tidemail setup … --root DIR` passes `tidemail config check`, and a daemon started from
// exactly that config delivers a test message end to end to a local test smarthost.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { testCerts } from '../helpers/certs.js';
import { stopAfterEach } from '../helpers/cleanup.js';
import { runCli, startDaemon } from '../helpers/daemon.js';
import { haveDovecot, startDovecot } from '../helpers/dovecot.js';
import { waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir } from '../helpers/tmp.js';
import { maildirNew } from '../helpers/maildir.js';
import { applyPreset, assertApplied, passwordFile } from './apply.js';

const keep = stopAfterEach(test);

const configCheck = (configPath: string) => runCli(['config', 'check', '--config', configPath]);

test('laptop: root\'s cron mail leaves through the STARTTLS smarthost, logged in, as the user\'s address', async () => {
  const sh = keep(await startSmarthost({ tls: 'starttls', auth: { user: 'me@example.net', pass: 'app pass 1' } }));
  const a = assertApplied(await applyPreset('laptop', [
    '--smarthost', `127.0.0.1:${sh.port}`, '--tls-ca-file', testCerts().caFile,
    '--user', 'me@example.net', '--password-file', passwordFile('app pass 1'), '--hostname', 'laptop.home.arpa',
  ]));
  const check = await configCheck(a.configPath);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /ok \(1 route\(s\)\)/);
  // The route is what the preset promises: link detection, and local senders rewritten.
  const route = a.read('routes/isp.toml');
  assert.match(route, /^online\.command = /m);
  assert.match(route, new RegExp(`^online\\.tcp = "127\\.0\\.0\\.1:${sh.port}"`, 'm'));
  const secret = fs.statSync(path.join(a.etc, 'secrets', 'isp'));
  assert.equal(secret.mode & 0o777, 0o600);

  keep(await startDaemon(a.site));
  const r = await runCli(['-C', a.configPath, 'root'], { argv0: 'sendmail', input: 'From: root\nSubject: cron output\n\nbackup done\n' });
  assert.equal(r.code, 0, r.stderr);
  const [m] = await sh.waitForMessages(1, 15_000);
  assert.equal(m!.to, ['me@example.net'], 'root is aliased to the user\'s address');
  assert.equal(m!.from, 'me@example.net', 'the envelope sender is rewritten');
  assert.equal(m!.user, 'me@example.net');
  assert.ok(m!.secure, 'STARTTLS was used');
  assert.match(m!.raw.toString(), /^From: <?me@example\.net>?\r$/m);
});

test('router: LAN mail waits while the WAN is down and leaves when the route comes up', async () => {
  const sh = keep(await startSmarthost({ auth: { user: 'me@example.net', pass: 'pw' } }));
  const a = assertApplied(await applyPreset('router', [
    '--smarthost', `127.0.0.1:${sh.port}`, '--tls', 'none', '--user', 'me@example.net', '--password-file', passwordFile('pw'),
    '--lan', '10.99.0.0/24', '--wan', 'tidemail-nowan0', '--hostname', 'gw.home.arpa',
  ]));
  const main = a.read('tidemail.toml');
  assert.match(main, /^trusted_networks = \["127\.0\.0\.0\/8", "::1\/128", "10\.99\.0\.0\/24"\]/m);
  assert.match(main, /^max_clients = 10/m);
  assert.match(a.read('routes/isp.toml'), /^online\.interface = "tidemail-nowan0"/m);
  assert.equal((await configCheck(a.configPath)).code, 0);

  keep(await startDaemon(a.site));
  await sendMessage(a.port, 'printer@gw.home.arpa', ['friend@remote.example'], 'Subject: toner low\r\n\r\nplease order\r\n');
  const q = await runCli(['mailq', '-C', a.configPath]);
  assert.match(q.stdout, /friend@remote\.example/, 'the message waits in the queue');
  assert.equal(sh.connections, 0, 'nothing is sent while the WAN is down');
  // What the hotplug hook does on WAN up (here by route name, as there is no real WAN).
  const up = await runCli(['link', 'up', 'isp', '--config', a.configPath]);
  assert.equal(up.code, 0, up.stderr);
  const [m] = await sh.waitForMessages(1, 15_000);
  assert.equal(m!.to, ['friend@remote.example']);
  assert.equal(m!.from, 'me@example.net', 'LAN devices leave with the user\'s address');
});

test('satellite: mail to local users is sent to the admin through the smarthost; nothing stays here', async () => {
  const sh = keep(await startSmarthost());
  const a = assertApplied(await applyPreset('satellite', ['--smarthost', `127.0.0.1:${sh.port}`, '--tls', 'none', '--admin', 'ops@example.org', '--hostname', 'box.example.org']));
  assert.equal((await configCheck(a.configPath)).code, 0);
  assert.not.match(a.read('routes/isp.toml'), /auth\./, 'no login without --user');
  keep(await startDaemon(a.site));
  const r = await runCli(['-C', a.configPath, 'www-data'], { argv0: 'sendmail', input: 'Subject: php error\n\noops\n' });
  assert.equal(r.code, 0, r.stderr);
  await sendMessage(a.port, 'root@box.example.org', ['someone@remote.example'], 'Subject: out\r\n\r\nx\r\n');
  const msgs = await sh.waitForMessages(2, 15_000);
  const to = msgs.map((m) => m.to.join(',')).sort();
  assert.equal(to, ['ops@example.org', 'someone@remote.example']);
});

test('pi-home: local mail lands in the user\'s Maildir, remote mail leaves, and the POP3 mailbox is fetched', async () => {
  const sh = keep(await startSmarthost({ auth: { user: 'me@example.net', pass: 'pw' } }));
  const mail = tmpDir('tidemail-mail-');
  fs.chmodSync(mail, 0o777); // written as the local user (nobody here), or as ourselves when not root
  const dovecot = haveDovecot() ? await startDovecot({ users: { me: 'pop secret' }, tls: true }) : null;
  try {
    dovecot?.deliver('me', 'From: friend@remote.example\r\nSubject: from the provider\r\n\r\nfetched body\r\n');
    const fetchArgs = dovecot ? ['--fetch', `pop3s://me@127.0.0.1:${dovecot.tlsPort}`, '--fetch-password-file', passwordFile('pop secret')] : [];
    const a = assertApplied(await applyPreset('pi-home', [
      '--smarthost', `127.0.0.1:${sh.port}`, '--tls', 'none', '--user', 'me@example.net', '--password-file', passwordFile('pw'),
      '--lan', '10.99.0.0/24', '--local-user', 'nobody', '--maildir', `${mail}/%u/Maildir`, '--hostname', 'pi.home.arpa',
      '--tls-ca-file', testCerts().caFile, ...fetchArgs,
    ]));
    assert.match(a.read('tidemail.toml'), /^user = "tidemail"/m, 'the daemon runs as tidemail, not as the local user (issue 16)');
    assert.equal((await configCheck(a.configPath)).code, 0);
    keep(await startDaemon(a.site));
    await sendMessage(a.port, 'friend@remote.example', ['root@pi.home.arpa'], 'Subject: for root\r\n\r\nlocal body\r\n');
    await sendMessage(a.port, 'nobody@pi.home.arpa', ['aunt@remote.example'], 'Subject: out\r\n\r\nremote body\r\n');
    const box = `${mail}/nobody/Maildir`;
    await waitFor('root\'s mail in the local user\'s Maildir', () => maildirNew(box).some((m) => m.includes('local body')), 10_000);
    const [m] = await sh.waitForMessages(1, 15_000);
    assert.equal(m!.to, ['aunt@remote.example']);
    if (dovecot) {
      const r = await runCli(['fetch', '--config', a.configPath]);
      assert.equal(r.code, 0, r.stderr + r.stdout);
      await waitFor('the fetched message in the Maildir', () => maildirNew(box).some((x) => x.includes('fetched body')), 15_000);
    } else {
      console.log('  (dovecot-pop3d not installed: the POP3 fetch part of the pi-home test was skipped)');
    }
  } finally {
    await dovecot?.stop();
  }
});

test.run();
