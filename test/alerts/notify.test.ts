// The URL action against a real local HTTPS server: a certificate from a CA we do not trust is
// refused (the alert is not sent in clear or unverified), the same server with tls_ca_file is
// accepted, redirects are not followed, and a command that hangs is killed at the timeout.

import https from 'node:https';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultAlerts } from '../../src/alerts/config.js';
import { runActions, type AlertEvent } from '../../src/alerts/notify.js';
import { testCerts } from '../helpers/certs.js';
import { cleanupTmp } from '../helpers/tmp.js';

const ev: AlertEvent = { kind: 'route-failing', subject: 'isp', state: 'firing', message: 'route isp: no delivery has worked for 1h', since: 0, at: 1, host: 'gw' };

test('https: verified against the system roots, or tls_ca_file; redirects are not followed', async () => {
  const certs = testCerts();
  let bodies = 0;
  const server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/moved') return void res.writeHead(302, { location: '/hook' }).end();
      bodies++;
      res.writeHead(204).end();
    });
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
  try {
    const url = `https://localhost:${port}/hook`;
    const [untrusted] = await runActions({ ...defaultAlerts(), url }, ev);
    assert.is(untrusted!.ok, false);
    assert.match(untrusted!.detail, /localhost:\d+: (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)/);
    assert.is(bodies, 0, 'nothing delivered to an unverified server');
    const [trusted] = await runActions({ ...defaultAlerts(), url, caFile: certs.caFile }, ev);
    assert.equal(trusted, { action: 'url', ok: true, detail: 'HTTP 204' });
    const [moved] = await runActions({ ...defaultAlerts(), url: `https://localhost:${port}/moved`, caFile: certs.caFile }, ev);
    assert.equal(moved, { action: 'url', ok: false, detail: 'HTTP 302' });
    assert.is(bodies, 1);
  } finally {
    await new Promise((r) => server.close(r));
  }
});

test('a command that does not finish is killed at the timeout; a missing one is reported', async () => {
  const [hung] = await runActions({ ...defaultAlerts(), timeoutMs: 300, command: [process.execPath, '-e', 'setInterval(() => {}, 1000)'] }, ev);
  assert.equal(hung, { action: 'command', ok: false, detail: 'killed (timeout)' });
  const [missing] = await runActions({ ...defaultAlerts(), command: ['/nonexistent/notify'] }, ev);
  assert.equal(missing, { action: 'command', ok: false, detail: 'cannot run /nonexistent/notify: ENOENT' });
  const [failing] = await runActions({ ...defaultAlerts(), command: [process.execPath, '-e', 'console.error("no network"); process.exit(3)'] }, ev);
  assert.equal(failing, { action: 'command', ok: false, detail: 'exit 3: no network' });
});

test.after(() => cleanupTmp());
test.run();
