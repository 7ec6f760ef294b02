// The presets without a smarthost: local-only (nothing leaves) and internet-site (direct MX
// delivery with TLS, DKIM signing, DNSBL and greylisting). Applied with `--root`, checked with
// `tidemail config check`, and run: a daemon started from the generated config delivers.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { runCli, startDaemon } from '../helpers/daemon.js';
import { startDnsServer } from '../helpers/dns-server.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir } from '../helpers/tmp.js';
import { maildirNew } from '../helpers/maildir.js';
import { applyPreset, assertApplied } from './apply.js';

const keep = stopAfterEach(test);

function mailDir(): string {
  const mail = tmpDir('tidemail-mail-');
  fs.chmodSync(mail, 0o777); // the daemon drops root to nobody
  return mail;
}

test('local-only: root\'s mail is delivered to the admin\'s Maildir; remote mail waits, nothing leaves', async () => {
  const mail = mailDir();
  const a = assertApplied(await applyPreset('local-only', ['--admin', 'nobody', '--maildir', `${mail}/%u/Maildir`, '--hostname', 'box.home.arpa']));
  assert.equal(fs.readdirSync(path.join(a.etc, 'routes')).length, 0, 'no route: no network delivery');
  const check = await runCli(['config', 'check', '--config', a.configPath]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /ok \(0 route\(s\)\)/);
  keep(await startDaemon(a.site));
  const r = await runCli(['-C', a.configPath, 'root'], { argv0: 'sendmail', input: 'Subject: disk check\n\nall good\n' });
  assert.equal(r.code, 0, r.stderr);
  await waitFor('root\'s mail in nobody\'s Maildir', () => maildirNew(`${mail}/nobody/Maildir`).some((m) => m.includes('all good')), 10_000);
  await sendMessage(a.port, 'nobody@box.home.arpa', ['far@remote.example'], 'Subject: out\r\n\r\nx\r\n');
  const q = await runCli(['mailq', '-C', a.configPath]);
  assert.match(q.stdout, /far@remote\.example/, 'remote mail waits in the queue');
});

test('internet-site: signed mail goes straight to the recipient\'s MX; mail for the domain is delivered here; TLS on 465', async () => {
  const mail = mailDir();
  const a = assertApplied(await applyPreset('internet-site', ['--domain', 'example.test', '--admin', 'nobody', '--hostname', 'mail.example.test', '--maildir', `${mail}/%u/Maildir`]));
  const main = a.read('tidemail.toml');
  assert.match(main, /^rcpt = \["relay", "recipients", "dnsbl", "greylist"\]$/m);
  assert.match(main, /^data = \["syntax", "spf-dkim-dmarc", "dkim-sign"\]$/m);
  assert.ok(fs.existsSync(path.join(a.etc, 'tls', 'cert.pem')), 'a self-signed certificate was made');
  assert.equal(fs.statSync(path.join(a.etc, 'tls', 'key.pem')).mode & 0o777, 0o600);
  assert.equal(fs.statSync(path.join(a.etc, 'dkim', 'example.test.key')).mode & 0o777, 0o600);
  assert.match(a.result.stdout, /tidemail\._domainkey\.example\.test IN TXT "v=DKIM1; k=rsa; p=/);
  assert.equal((await runCli(['config', 'check', '--config', a.configPath])).code, 0);

  // Point the site at loopback stand-ins for the Internet: free ports, a local DNS server, and
  // a test SMTP server as the recipient domain's MX.
  const mx = keep(await startSmarthost());
  const dns = await startDnsServer({ 'remote.example': { MX: [[10, 'mx.remote.example']] }, 'mx.remote.example': { A: ['127.0.0.1'] } });
  try {
    const [sub, smtps] = [await freePort(), await freePort()];
    const dnsAt = `127.0.0.1:${dns.port}`;
    fs.writeFileSync(a.configPath, main
      .replace(/^submission = .*$/m, `submission = ["127.0.0.1:${sub}"]`)
      .replace(/^smtps = .*$/m, `smtps = ["127.0.0.1:${smtps}"]`)
      .replace(/^zones = (.*)$/m, `zones = $1\nservers = ["${dnsAt}"]`)
      + `\n[checks.spf-dkim-dmarc]\ndns_servers = ["${dnsAt}"]\n`);
    fs.appendFileSync(path.join(a.etc, 'routes', 'mx.toml'), `port = ${mx.port}\ndns_servers = ["${dnsAt}"]\n`);

    keep(await startDaemon(a.site));
    await sendMessage(a.port, 'alice@example.test', ['bob@remote.example'], 'From: alice@example.test\r\nTo: bob@remote.example\r\nSubject: signed\r\n\r\nhello\r\n');
    const [m] = await mx.waitForMessages(1, 15_000);
    assert.equal(m!.to, ['bob@remote.example']);
    assert.match(m!.raw.toString(), /^DKIM-Signature: .*d=example\.test;.*s=tidemail;/ms);
    assert.ok(dns.queries.some((q) => q.name === 'remote.example' && q.type === 'MX'), 'the MX was looked up');

    await sendMessage(a.port, 'friend@remote.example', ['postmaster@example.test'], 'Subject: hi postmaster\r\n\r\ninbound\r\n');
    await waitFor('postmaster\'s mail in the admin\'s Maildir', () => maildirNew(`${mail}/nobody/Maildir`).some((x) => x.includes('inbound')), 10_000);

    // smtps: TLS from the first byte, with the generated certificate, valid for the host name.
    const tls = await import('node:tls');
    const banner = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port: smtps, servername: 'mail.example.test', ca: fs.readFileSync(path.join(a.etc, 'tls', 'cert.pem')) }, () => undefined);
      s.once('data', (d) => {
        resolve(d.toString());
        s.end('QUIT\r\n');
      });
      s.once('error', reject);
    });
    assert.match(banner, /^220 mail\.example\.test /);
  } finally {
    await dns.close();
  }
});

test.run();
