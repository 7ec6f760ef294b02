// runChecks: order, phase filtering, and failures that must never turn into an accept.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runChecks, type Check, type CheckContext, type Phase, type Verdict } from '../../src/checks/check.js';

const test = suite('runChecks');

const ctx: CheckContext = { phase: 'rcpt', sessionId: 's1', listener: 'mx', trusted: false, connection: {}, transaction: {}, clientAddress: '192.0.2.1', recipients: [], tls: false };
const check = (name: string, run: () => Promise<Verdict>, phases: Phase[] = ['rcpt'], seen?: string[]): Check => ({
  name,
  phases,
  run: () => (seen?.push(name), run()),
});
const reject: Verdict = { action: 'reject', code: 550, enhanced: '5.7.1', text: 'no' };

test('next when every check passes', async () => {
  assert.equal(await runChecks([check('a', async () => ({ action: 'next' }))], 'rcpt', ctx), { action: 'next' });
  assert.equal(await runChecks([], 'rcpt', ctx), { action: 'next' });
});

test('the first verdict that is not next wins, later checks do not run', async () => {
  const seen: string[] = [];
  const v = await runChecks([
    check('a', async () => ({ action: 'next' }), ['rcpt'], seen),
    check('b', async () => reject, ['rcpt'], seen),
    check('c', async () => ({ action: 'accept' }), ['rcpt'], seen),
  ], 'rcpt', ctx);
  assert.equal(v, { ...reject, by: 'b' });
  assert.equal(seen, ['a', 'b']);
});

test('checks not registered for the phase are skipped', async () => {
  const seen: string[] = [];
  const v = await runChecks([check('mailonly', async () => reject, ['mail'], seen)], 'rcpt', ctx);
  assert.equal(v, { action: 'next' });
  assert.equal(seen, []);
});

test('a check that throws is a 451 4.3.0 tempfail naming it, never accept', async () => {
  const v = await runChecks([check('broken', async () => { throw new Error('socket gone'); })], 'rcpt', ctx);
  assert.is(v.action, 'tempfail');
  assert.ok(v.action === 'tempfail' && v.code === 451 && v.enhanced === '4.3.0' && /broken/.test(v.text) && /socket gone/.test(v.text));
});

test('a check that does not answer in time is a 451 tempfail', async () => {
  const v = await runChecks([check('slow', () => new Promise(() => undefined))], 'rcpt', ctx, { timeoutMs: 50 });
  assert.ok(v.action === 'tempfail' && v.code === 451 && /slow/.test(v.text));
});

test.run();
