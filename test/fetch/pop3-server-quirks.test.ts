// The fetch job against servers that lack what Dovecot always has (test/helpers/scripted-pop3.ts):
// no UIDL (messages told apart by TOP), neither UIDL nor TOP, a connection dropped mid-RETR, and
// a server that does not speak POP3. The job against a real Dovecot is in pop3.test.ts.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FetchAccount } from '../../src/fetch/account.js';
import { fetchAccount } from '../../src/fetch/pop3.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { collector, fetchAccountConfig, message, subjects } from '../helpers/fetch-job.js';
import { startScriptedPop3 } from '../helpers/scripted-pop3.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

let stateDir: string;
test.before(() => {
  stateDir = tmpDir('tidemail-fetch-');
});
test.after(() => cleanupTmp());

const account = (name: string, port: number, over: Partial<FetchAccount> = {}) => fetchAccountConfig(name, port, { user: 'keeper', password: 'k33p', ...over });

test('no UIDL: messages are told apart by their TOP headers, so keep = true still works', async () => {
  const fake = await startScriptedPop3([message('t1'), message('t2'), 'Subject: no id\r\n\r\nx\r\n'], { uidl: false, top: true });
  const uidls = await UidlStore.open(stateDir);
  const acct = account('fake/top', fake.port, { auth: 'user' });
  const first = collector(uidls);
  const r = await fetchAccount(acct, first);
  assert.equal([r.fetched, r.error], [3, undefined]);
  assert.equal(subjects(first.got), ['no id', 't1', 't2']);
  const r2 = await fetchAccount(acct, collector(uidls));
  assert.equal([r2.fetched, r2.error], [0, undefined]);
  fake.close();
  await uidls.close();
});

test('neither UIDL nor TOP: keep = true is refused, keep = false fetches and deletes all', async () => {
  const fake = await startScriptedPop3([message('n1'), message('n2')], { uidl: false, top: false });
  const uidls = await UidlStore.open(stateDir);
  const kept = await fetchAccount(account('fake/none', fake.port, { auth: 'user' }), collector(uidls));
  assert.match(kept.error ?? '', /offers neither UIDL nor TOP.*set keep = false/);
  assert.equal(kept.fetched, 0);
  const deps = collector(uidls);
  const r = await fetchAccount(account('fake/none', fake.port, { auth: 'user', keep: false }), deps);
  assert.equal([r.fetched, r.deleted, r.error], [2, 2, undefined]);
  assert.equal(fake.left(), []);
  fake.close();
  await uidls.close();
});

test('a connection dropped mid-RETR: an error, nothing deleted, only the finished message remembered', async () => {
  const fake = await startScriptedPop3([message('d1'), message('d2', 'y'.repeat(200_000) + '\r\n')], { uidl: true, top: true, dropOnRetr: 2 });
  const uidls = await UidlStore.open(stateDir);
  const acct = account('fake/drop', fake.port, { auth: 'user', keep: false });
  const deps = collector(uidls);
  const r = await fetchAccount(acct, deps);
  assert.match(r.error ?? '', /closed the connection/);
  assert.equal([r.fetched, r.deleted], [1, 0]);
  assert.equal(subjects(deps.got), ['d1']);
  assert.equal(fake.left().length, 2, 'no QUIT, so no deletion');
  assert.ok(await uidls.has('fake/drop', 'u1'));
  assert.not.ok(await uidls.has('fake/drop', 'u2'));
  fake.close();
  await uidls.close();
});

test('a server that does not speak POP3: an error, no throw', async () => {
  const fake = await startScriptedPop3([], { uidl: true, top: true, greeting: '220 smtp.example ESMTP' });
  const uidls = await UidlStore.open(stateDir);
  const r = await fetchAccount(account('fake/smtp', fake.port), collector(uidls));
  assert.match(r.error ?? '', /not \+OK\/-ERR \(is this a POP3 server\?\)/);
  assert.not.ok(r.authFailed);
  fake.close();
  await uidls.close();
});

test.run();
