// SIGHUP (src/daemon.ts reload, SmtpFront.setChecks/reloadTls): a changed [checks] list applies to
// the next session, a bad check option keeps the old configuration, and a renewed certificate is
// served without a restart when the daemon user can read the key (a certbot deploy hook's case).

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const running: RunningDaemon[] = [];
test.after.each(async () => {
  for (const d of running.splice(0)) await d.stop();
});
test.after(() => cleanupTmp());

const NO_FROM = 'Subject: no From or Date here\r\n\r\nhello\r\n';

async function send(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  try {
    await c.hello();
    await c.cmd('MAIL FROM:<x@remote.example>');
    await c.cmd('RCPT TO:<me@tidemail.test>');
    await c.cmd('DATA');
    c.write(NO_FROM + '.\r\n');
    return await c.reply();
  } finally {
    c.close();
  }
}

test('SIGHUP applies a changed [checks] list to new sessions; a bad check option keeps the old one', async () => {
  const aliases = writeFile(path.join(tmpDir(), 'aliases'), 'me: "|cat >/dev/null"\n');
  const site = await makeSite(`[local]\ndomains = ["tidemail.test"]\naliases = "${aliases}"\n`, { smtpToml: 'greet_delay = "0s"' });
  const base = fs.readFileSync(site.configPath, 'utf8').replace(/^trusted_networks = .*$/m, 'trusted_networks = ["192.0.2.0/24"]');
  fs.writeFileSync(site.configPath, base);
  const d = await startDaemon(site);
  running.push(d);
  // The default data checks include syntax: an untrusted client's message without From/Date is refused.
  assert.match(await send(site.port), /^5\d\d 5\.\d+\.\d+ /);

  fs.writeFileSync(site.configPath, base + '\n[checks]\ndata = []\n');
  d.proc.kill('SIGHUP');
  await d.waitForLog(/configuration reloaded/);
  assert.match(await send(site.port), /^250 2\.0\.0 /);

  // A typo in a check's options: the reload fails with file:line and the running config stays.
  fs.writeFileSync(site.configPath, base + '\n[checks]\ndata = ["syntax"]\n[checks.syntax]\nmax_headerz = 5\n');
  d.proc.kill('SIGHUP');
  const m = await d.waitForLog(/reload failed, keeping the old configuration.*/);
  assert.match(m[0], /tidemail\.toml:\d+/);
  assert.match(m[0], /max_headerz/);
  assert.match(await send(site.port), /^250 2\.0\.0 /);
});

/** The certificate the server presents after STARTTLS, as its SHA-256 fingerprint. */
async function servedFingerprint(port: number): Promise<string> {
  const c = await RawSmtp.connect(port);
  await c.hello();
  const r = await c.cmd('STARTTLS');
  assert.match(r, /^220 /);
  c.sock.removeAllListeners('data');
  return new Promise((resolve, reject) => {
    const s = tls.connect({ socket: c.sock, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

function selfSigned(dir: string, cn: string): { cert: string; key: string } {
  const cert = path.join(dir, `${cn}.pem`);
  const key = path.join(dir, `${cn}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`], { stdio: 'ignore' });
  return { cert: fs.readFileSync(cert, 'utf8'), key: fs.readFileSync(key, 'utf8') };
}

test('SIGHUP serves a renewed certificate without a restart', async () => {
  const dir = tmpDir();
  const first = selfSigned(dir, 'first');
  const second = selfSigned(dir, 'second');
  const site = await makeSite('', { smtpToml: 'tls_cert = "cert.pem"\ntls_key = "key.pem"' });
  writeFile(path.join(site.dir, 'cert.pem'), first.cert);
  // Owned by the daemon user (nobody in tests run as root), as a deploy hook would arrange.
  writeSecret(path.join(site.dir, 'key.pem'), first.key);
  const d = await startDaemon(site);
  running.push(d);
  const fp = (pem: string) => new crypto.X509Certificate(pem).fingerprint256;
  assert.is(await servedFingerprint(site.port), fp(first.cert));

  writeFile(path.join(site.dir, 'cert.pem'), second.cert);
  writeSecret(path.join(site.dir, 'key.pem'), second.key);
  d.proc.kill('SIGHUP');
  await d.waitForLog(/TLS certificate reloaded/);
  assert.is(await servedFingerprint(site.port), fp(second.cert));
});

test.run();
