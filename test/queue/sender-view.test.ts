// What the sender of a message sees of its history (src/queue/sender-view.ts), event by event,
// as the daemon logs them: the cases the daemon test (control/history-privacy) does not reach
// on one machine — a refusal in session, a refused .forward target, a forged uid, LMTP.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { MessageHistory, StoredEvent } from '../../src/queue/events.js';
import { namesAddress, parseFields, senderView, submitterUid } from '../../src/queue/sender-view.js';

const ID = '01A23EAFB2400296';
const ACCEPTED = 'from=<me@tidemail.test> via=sendmail uid=1000 nrcpt=2 size=159';
const ev = (rcpt: number | null, event: string, fields: string): StoredEvent => ({
  t: 1, msgid: ID, envId: rcpt === null ? null : `${ID}${rcpt.toString(16).padStart(4, '0')}`, level: 'info', event, fields,
});
const view = (...events: StoredEvent[]) => senderView({ msgid: ID, events, queued: null }, ACCEPTED, null).events;

test('fields: quoted values keep their spaces and escapes; a uid inside one is not the uid field', () => {
  assert.equal(parseFields('a=1 b="x \\"y\\" z=2" c='), [
    { key: 'a', raw: '1', value: '1' },
    { key: 'b', raw: '"x \\"y\\" z=2"', value: 'x "y" z=2' },
    { key: 'c', raw: '', value: '' },
  ]);
  assert.is(submitterUid(ACCEPTED), 1000);
  assert.is(submitterUid('from="<x uid=1000 y@evil.example>" via=smtp nrcpt=1'), null);
  assert.is(submitterUid('from=<a@b> uid=10000 nrcpt=1'), 10000);
});

test('a remote hop\'s reply is shown as it is; a local outcome keeps its status code, not its words', () => {
  const remote = ev(1, 'deferred', 'to=<far@remote.example> route=isp relay=mx.remote.example result="451 4.7.1 greylisted, come back later" attempts=1');
  const [r, lmtp, mda] = view(
    remote,
    ev(0, 'delivered', 'to=<bob@tidemail.test> route=local relay=/run/dovecot/lmtp result="250 2.0.0 delivered by LMTP /run/dovecot/lmtp"'),
    ev(0, 'refused in session', 'to=<bob@tidemail.test> result="5.2.2 /usr/bin/procmail -d bob exited with 77 (mailbox full)"'),
  );
  assert.equal(r, remote);
  assert.is(lmtp!.fields, 'to=<bob@tidemail.test> route=local result="250 2.0.0 delivered to the local recipient"');
  assert.is(mda!.fields, 'to=<bob@tidemail.test> result="5.2.2 local delivery failed (the reason is for the postmaster)"');
});

test('no such user stays word for word; a forward is said, not where it goes', () => {
  const [nouser, fwd] = view(
    ev(0, 'bounced', 'to=<bbo@tidemail.test> route=local result="550 5.1.1 <bbo@tidemail.test>: no such user here"'),
    ev(1, 'delivered', 'to=<ann@tidemail.test> route=local result="forwarded to <ann@elsewhere.example>; 2.0.0 delivered to /home/ann/saved"'),
  );
  assert.match(nouser!.fields, /result="550 5\.1\.1 <bbo@tidemail\.test>: no such user here"$/);
  assert.match(fwd!.fields, /result="delivered to the local recipient \(forwarded by the recipient\)"$/);
});

test('a refused .forward target, the recipients a .forward added, and a local error are not shown', () => {
  const kept = view(
    ev(null, 'accepted', ACCEPTED),
    ev(0, '.forward target refused: delivery does not run as its owner', 'to=<bob@tidemail.test> user=bob kind=pipe target="|/home/bob/bin/filter" running_as="nobody (uid 65534)"'),
    ev(2, 'deferred', 'to=<bob@elsewhere.example> route=isp result="451 try later" attempts=1'),
    ev(null, 'delivery failed unexpectedly', 'route=local error="EACCES /home/bob/Maildir"'),
  );
  assert.equal(kept.map((e) => [e.event, e.fields]), [['accepted', ACCEPTED], ['delivery failed unexpectedly', 'route=local']]);
  assert.not.ok(namesAddress({ msgid: ID, events: kept, queued: null }, 'bob@elsewhere.example'));
  assert.ok(namesAddress({ msgid: ID, events: kept, queued: null }, 'me'));
});

test('queued recipients: only those the sender gave, a local last error without its words', () => {
  const h: MessageHistory = { msgid: ID, events: [], queued: { sender: 'me@tidemail.test', created: 1, recipients: [] } };
  const row = (i: number, address: string, route: string | null, lastError: string | null) => ({ envId: `${ID}000${i}`, address, status: 'queued', attempts: 1, lastError, nextAttempt: 2, route });
  const q = senderView(h, ACCEPTED, [
    row(0, 'dave@tidemail.test', 'local', '4.2.0 home directory /home/dave of dave is missing (ENOENT)'),
    row(1, 'far@remote.example', 'isp', 'cannot connect to 127.0.0.1:9'),
    row(2, 'dave@elsewhere.example', 'isp', null),
  ]).queued!;
  assert.equal(q.recipients.map((r) => [r.address, r.lastError]), [
    ['dave@tidemail.test', '4.2.0 local delivery failed for now; retried later (the reason is for the postmaster)'],
    ['far@remote.example', 'cannot connect to 127.0.0.1:9'],
  ]);
  assert.not.ok('route' in q.recipients[0]!);
});

test.run();
