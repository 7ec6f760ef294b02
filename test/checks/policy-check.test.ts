// The policy check as the daemon builds it (createCheck from a [checks.policy] table), against a
// real postgrey: greylisting at RCPT, a pass after the delay with the PREPEND logged; and the
// phase the [checks] lists run it in is the protocol_state it asks about.

import net from 'node:net';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks, type Check } from '../../src/checks/check.js';
import { createCheck } from '../../src/checks/policy-check.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startPostgrey, type Postgrey } from '../helpers/postgrey.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';
import { logged } from '../helpers/stderr.js';

const test = suite('policy-check');
const servers: Postgrey[] = [];
const checks: Check[] = [];
test.after(async () => {
  for (const c of checks) await c.close?.();
  for (const s of servers) s.stop();
  cleanupTmp();
});

async function policy(address: string, extra = ''): Promise<Check> {
  const c = await buildCheck(createCheck, 'policy', `[checks]\nrcpt = ["policy"]\n\n[checks.policy]\naddress = "${address}"\n${extra}\n`);
  checks.push(c);
  return c;
}

test('createCheck: postgrey greylists at RCPT with 450, passes after the delay, PREPEND is logged', async () => {
  const pg = await startPostgrey(1);
  servers.push(pg);
  const check = await policy(pg.address, 'timeout = "5s"');
  assert.equal([...check.phases], ['connect', 'helo', 'mail', 'rcpt', 'data']);
  const rcpt = (to: string) => context('rcpt', { sessionId: 'p1', recipient: to, queueId: 'Q1' });
  const first = await runChecks([check], 'rcpt', rcpt('bob@tidemail.test'));
  assert.ok(first.action === 'tempfail' && first.code === 450 && first.enhanced === '4.7.1', JSON.stringify(first));
  assert.match((first as { text: string }).text, /Greylisted/);
  // Retried until postgrey's delay (its own clock) is over; the passing answer is the one logged.
  const { result, lines } = await waitFor('postgrey to pass the retry', async () => {
    const r = await logged(() => check.run('rcpt', rcpt('bob@tidemail.test')));
    return r.result.action === 'tempfail' ? null : r;
  }, 15_000, 250);
  assert.equal(result, { action: 'next' });
  assert.match(lines, /Q1: policy action not applied check=policy phase=rcpt client=198\.51\.100\.7 action="PREPEND X-Greylist: delayed \d+ seconds by postgrey/);
});

test('it asks at whatever phase it runs in (protocol_state), over a unix socket too', async () => {
  // postgrey ignores protocol_state, so a recording stand-in shows what we send.
  const sock = path.join(tmpDir('tidemail-policy-'), 'policy.sock');
  const states: string[] = [];
  const server = net.createServer((s) =>
    s.on('data', (d) => {
      for (const req of String(d).split('\n\n').filter((r) => r.trim())) {
        const state = /^protocol_state=(.*)$/m.exec(req)?.[1] ?? '?';
        states.push(state);
        s.write(state === 'END-OF-MESSAGE' ? 'action=REJECT 5.7.1 no thanks\n\n' : 'action=DUNNO\n\n');
      }
    }));
  await new Promise<void>((r) => server.listen(sock, r));
  const check = await policy(sock);
  for (const phase of ['connect', 'helo', 'mail', 'rcpt'] as const) {
    assert.equal(await check.run(phase, context(phase, { recipient: 'x@tidemail.test' })), { action: 'next' }, phase);
  }
  const v = await check.run('data', context('data', { recipients: ['x@tidemail.test'] }));
  assert.equal(v, { action: 'reject', code: 554, enhanced: '5.7.1', text: 'no thanks' });
  assert.equal(states, ['CONNECT', 'EHLO', 'MAIL', 'RCPT', 'END-OF-MESSAGE']);
  await check.close?.();
  server.close();
});

test('an unreachable policy server is a 451 naming the check', async () => {
  const port = await freePort();
  const check = await policy(`127.0.0.1:${port}`, 'timeout = "1s"');
  const v = await runChecks([check], 'rcpt', context('rcpt', { recipient: 'x@tidemail.test' }));
  assert.ok(v.action === 'tempfail' && v.code === 451 && v.enhanced === '4.3.0' && /check policy/.test(v.text), JSON.stringify(v));
});

test('bad options are config errors with file:line', async () => {
  const bad = async (table: string, re: RegExp) => {
    const toml = `[checks.policy]\n${table}\n`;
    const err = await Promise.resolve().then(() => buildCheck(createCheck, 'policy', toml)).then(() => null, (e: Error) => e);
    assert.instance(err, ConfigError, toml);
    assert.match(err!.message, re);
  };
  await bad('timeout = "5s"', /tidemail\.toml:1(:\d+)?: 'checks\.policy\.address' is missing/);
  await bad('address = "postgrey"', /:2(:\d+)?: .*neither host:port nor a socket path/);
  await bad('address = "127.0.0.1:10023"\ntimeout = "soon"', /:3(:\d+)?: .*not a duration/);
  await bad('address = "127.0.0.1:10023"\nphases = ["rcpt"]', /:3(:\d+)?: 'checks\.policy\.phases' is not a known setting/);
});

test('end to end: the daemon greylists RCPT with postgrey\'s 450, then relays the retry', async () => {
  const pg = await startPostgrey(1);
  servers.push(pg);
  const sh = await startSmarthost();
  const site = await makeSite(`[checks]\nrcpt = ["policy"]\n[checks.policy]\naddress = "${pg.address}"\n`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const msg = 'From: alice@example.org\r\nTo: bob@remote.example\r\nSubject: greylisted\r\n\r\nhello\r\n';
    const first = await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], msg);
    assert.match(first, /^450 4\.7\.1 Greylisted/);
    // The sender retries until postgrey's delay is over, as a sending MTA would.
    await waitFor('the retry to be accepted', async () => {
      const reply = await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], msg);
      if (/^450 4\.7\.1 Greylisted/.test(reply)) return false;
      assert.match(reply, /^250/);
      return true;
    }, 15_000, 250);
    const [got] = await sh.waitForMessages(1);
    assert.ok(got!.raw.toString().endsWith(msg));
    assert.match(d.logs(), /policy action not applied check=policy phase=rcpt client=127\.0\.0\.1 action="PREPEND X-Greylist/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
