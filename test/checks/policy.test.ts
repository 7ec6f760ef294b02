// The policy client against a real policy daemon: postgrey (apt), greylisting with a 2 s delay.

import net from 'node:net';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks, type Check, type CheckContext } from '../../src/checks/check.js';
import { policyCheck, policyDecision, createPolicyClient } from '../../src/checks/policy.js';
import { startPostgrey as startSharedPostgrey, type Postgrey } from '../helpers/postgrey.js';
import { freePort, sleep, waitFor } from '../helpers/ports.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('policy');
const servers: Postgrey[] = [];
const checks: Check[] = [];
test.after(async () => {
  for (const c of checks) await c.close?.();
  for (const p of servers) p.stop();
  cleanupTmp();
});

/** postgrey from the shared helper with a 2 s delay, stopped after the suite. */
async function startPostgrey(extra: string[] = []): Promise<Postgrey> {
  const pg = await startSharedPostgrey(2, extra);
  servers.push(pg);
  return pg;
}

const ctx = (recipient: string): CheckContext => ({
  phase: 'rcpt',
  sessionId: 's1',
  listener: 'mx',
  trusted: false,
  connection: {},
  transaction: {},
  clientAddress: '192.0.2.10',
  helo: 'mx.example.org',
  sender: 'alice@example.org',
  recipient,
  recipients: [],
  tls: false,
  queueId: 'abc123',
});

test('postgrey defers a new triplet with 450, then passes it after the delay', async () => {
  const pg = await startPostgrey();
  const ignored: string[] = [];
  const check = policyCheck({ address: `127.0.0.1:${pg.port}`, timeoutMs: 5000, onIgnored: (a) => ignored.push(a) });
  checks.push(check);
  const first = await check.run('rcpt', ctx('bob@example.net'));
  assert.equal(first.action, 'tempfail', JSON.stringify(first));
  assert.ok(first.action === 'tempfail' && first.code === 450 && first.enhanced === '4.7.1', JSON.stringify(first));
  assert.match((first as { text: string }).text, /Greylisted/);
  // A second triplet on the same (reused) connection is greylisted on its own.
  const other = await runChecks([check], 'rcpt', ctx('carol@example.net'));
  assert.is(other.action, 'tempfail');
  // Retried the way an MTA would, until postgrey's delay (its own clock) is over.
  const again = await waitFor('postgrey to pass the retried triplet', async () => {
    const v = await check.run('rcpt', ctx('bob@example.net'));
    if (v.action === 'tempfail') return null;
    return v;
  }, 15_000, 250);
  assert.equal(again, { action: 'next' });
  // postgrey passes with PREPEND X-Greylist, which we note but do not act on.
  assert.ok(ignored.some((a) => /^PREPEND X-Greylist/.test(a)), ignored.join('|') + pg.log());
});

test('one connection carries many requests', async () => {
  const pg = await startPostgrey();
  const client = createPolicyClient({ address: `127.0.0.1:${pg.port}` });
  const base = { request: 'smtpd_access_policy', protocol_state: 'RCPT', client_address: '192.0.2.20', client_name: 'unknown', sender: 's@example.org' };
  const replies = await Promise.all([1, 2, 3].map((i) => client.query({ ...base, recipient: `r${i}@example.net` })));
  for (const r of replies) assert.match(r, /^DEFER_IF_PERMIT/, replies.join(" | "));
  await client.close();
});

test('a server that closes after each reply (postgrey --exim) gets a fresh connection', async () => {
  const pg = await startPostgrey(['--exim']);
  const client = createPolicyClient({ address: `127.0.0.1:${pg.port}` });
  const base = { request: 'smtpd_access_policy', protocol_state: 'RCPT', client_address: '192.0.2.30', client_name: 'unknown', sender: 's@example.org' };
  for (const i of [1, 2, 3]) {
    assert.match(await client.query({ ...base, recipient: `e${i}@example.net` }), /^DEFER_IF_PERMIT/);
    await sleep(50); // let the close arrive, as between two SMTP commands
  }
  assert.match(await client.query({ ...base, recipient: 'e4@example.net' }), /^DEFER_IF_PERMIT/);
  await client.close();
});

test('an unreachable policy server becomes a 451 tempfail, never accept', async () => {
  const port = await freePort();
  const check = policyCheck({ address: `127.0.0.1:${port}` });
  const v = await runChecks([check], 'rcpt', ctx('x@example.net'));
  assert.equal(v.action, 'tempfail');
  assert.ok(v.action === 'tempfail' && v.code === 451 && v.enhanced === '4.3.0' && v.text.includes('policy'));
  await check.close?.();
});

test('a silent policy server times out into a tempfail', async () => {
  const server = net.createServer(() => undefined);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const check = policyCheck({ address: `127.0.0.1:${port}`, timeoutMs: 200 });
  const v = await runChecks([check], 'rcpt', ctx('x@example.net'));
  assert.equal(v.action, 'tempfail');
  await check.close?.();
  server.close();
});

test('works over a unix socket', async () => {
  const sock = path.join(tmpDir('tidemail-policy-'), 'policy.sock');
  const server = net.createServer((s) => s.on('data', () => s.write('action=REJECT 5.7.0 go away\n\n')));
  await new Promise<void>((r) => server.listen(sock, r));
  const check = policyCheck({ address: sock });
  assert.equal(await check.run('rcpt', ctx('x@example.net')), { action: 'reject', code: 554, enhanced: '5.7.0', text: 'go away' });
  await check.close?.();
  server.close();
});

test('action mapping follows SMTPD_POLICY_README', () => {
  assert.equal(policyDecision('OK').verdict, { action: 'next' });
  assert.equal(policyDecision('dunno').verdict, { action: 'next' });
  assert.equal(policyDecision('REJECT').verdict, { action: 'reject', code: 554, enhanced: '5.7.1', text: 'Access denied' });
  assert.equal(policyDecision('REJECT spam source').verdict, { action: 'reject', code: 554, enhanced: '5.7.1', text: 'spam source' });
  assert.equal(policyDecision('DEFER later').verdict, { action: 'tempfail', code: 450, enhanced: '4.7.1', text: 'later' });
  assert.equal(policyDecision('550 5.1.1 no such user').verdict, { action: 'reject', code: 550, enhanced: '5.1.1', text: 'no such user' });
  assert.equal(policyDecision('421 closing').verdict, { action: 'tempfail', code: 421, enhanced: '4.7.1', text: 'closing' });
  for (const a of ['HOLD', 'DISCARD x', 'PREPEND X-A: b', 'FILTER smtp:x', 'WARN w']) {
    const d = policyDecision(a);
    assert.equal(d.verdict, { action: 'next' });
    assert.is(d.ignored, a);
  }
});

test.run();
