// The store contract (issue 15 §5): what every queue backend must do, written against the
// interfaces alone (store.ts, admin.ts) with a stepped clock. A second backend adds one line to
// BACKENDS and must pass every test here; the spool part also holds the maildrop's spool to it.

import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Queue } from '../../src/queue/admin.js';
import { envelopeId, isEnvelopeId, isMessageId, messageIdOf } from '../../src/queue/ids.js';
import { MaildropSpool } from '../../src/queue/maildrop.js';
import { SqliteQueueStore } from '../../src/queue/sqlite.js';
import type { Clock, Spool } from '../../src/queue/store.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

interface Backend {
  name: string;
  /** Opens (or reopens) the backend's queue kept in `dir`. */
  open(dir: string, clock: Clock): Promise<Queue>;
}

const BACKENDS: Backend[] = [{ name: 'sqlite', open: (dir, clock) => SqliteQueueStore.open(dir, clock) }];

/** A clock the test moves by hand: nothing in a store may read the real one. */
function steppedClock(start = Date.UTC(2026, 0, 1)): Clock & { step(ms: number): void } {
  let t = start;
  return Object.assign(() => t, { step: (ms: number) => void (t += ms) });
}

async function readAll(s: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

const HEAD = 'Received: by us\r\nSubject: t\r\nX-Old: 1\r\n';
const BODY = 'line one\r\n\xe9 8-bit\r\n.\r\n';

/** Writes HEAD, the empty line and BODY in odd pieces (a split in the middle of a CRLF). */
async function writeMessage(spool: Spool): Promise<void> {
  const all = Buffer.from(HEAD + '\r\n' + BODY, 'latin1');
  for (let i = 0; i < all.length; i += 7) await spool.write(all.subarray(i, i + 7));
}

async function committed(q: Queue, recipients: string[], meta: { notBefore?: number; origin?: string } = {}): Promise<string> {
  const s = q.openMessage();
  await writeMessage(s);
  await s.commit({ sender: 'a@here.example', recipients, via: 'test', ...meta });
  return s.msgid;
}

// ---- the spool: every backend's, and the maildrop's ----

interface SpoolMaker {
  name: string;
  open(): Promise<{ spool: Spool; stored(): Promise<Buffer>; close(): Promise<void> }>;
}

const SPOOLS: SpoolMaker[] = [
  ...BACKENDS.map((b): SpoolMaker => ({
    name: `${b.name} spool`,
    open: async () => {
      const q = await b.open(tmpDir(), steppedClock());
      const spool = q.openMessage();
      return { spool, stored: () => readAll(q.readBody(spool.msgid)), close: () => q.close() };
    },
  })),
  {
    name: 'maildrop spool',
    open: async () => {
      const dir = tmpDir();
      const spool = new MaildropSpool(dir);
      return {
        spool,
        // The message bytes of the committed file, without its envelope trailer.
        stored: async () => {
          const file = fs.readFileSync(path.join(dir, spool.msgid));
          const jsonLength = Number(file.subarray(file.length - 11, file.length - 1).toString());
          return file.subarray(0, file.length - 11 - jsonLength);
        },
        close: async () => undefined,
      };
    },
  },
];

for (const m of SPOOLS) {
  test(`${m.name}: reads back what was written, edits the header and body, prepends once, commits exactly that`, async () => {
    const { spool, stored, close } = await m.open();
    await writeMessage(spool);
    assert.equal((await readAll(spool.readBack()())).toString('latin1'), HEAD + '\r\n' + BODY);
    // A fresh stream each call.
    assert.equal((await readAll(spool.readBack()())).length, spool.size);
    await spool.rewrite(Buffer.byteLength(HEAD, 'latin1'), {
      header: (section) => section.replace('X-Old: 1\r\n', 'X-New: 2\r\n'),
      body: [Buffer.from('new body\r\n')],
    });
    const edited = HEAD.replace('X-Old: 1', 'X-New: 2') + '\r\nnew body\r\n';
    assert.equal((await readAll(spool.readBack()())).toString('latin1'), edited);
    await spool.prepend(Buffer.from('DKIM-Signature: v=1\r\n'));
    await spool.prepend(Buffer.from('X-Twice: no\r\n')).then(() => assert.unreachable('prepended twice'), () => undefined);
    assert.equal(spool.size, Buffer.byteLength('DKIM-Signature: v=1\r\n' + edited, 'latin1'));
    await spool.commit({ sender: 'a@here.example', recipients: ['b@there.example'], via: 'test' });
    assert.equal((await stored()).toString('latin1'), 'DKIM-Signature: v=1\r\n' + edited);
    await close();
  });

  test(`${m.name}: a header edit alone keeps the body byte for byte`, async () => {
    const { spool, stored, close } = await m.open();
    await writeMessage(spool);
    await spool.rewrite(Buffer.byteLength(HEAD, 'latin1'), { header: (section) => section + 'X-Added: yes\r\n' });
    await spool.commit({ sender: '', recipients: ['b@there.example'], via: 'test' });
    assert.equal((await stored()).toString('latin1'), HEAD + 'X-Added: yes\r\n\r\n' + BODY);
    await close();
  });
}

// ---- storage and admin, per backend ----

for (const b of BACKENDS) {
  const name = (s: string) => `${b.name}: ${s}`;

  test(name('ids come from ids.ts; arrival and due times from the clock given, nothing visible before commit'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const s = q.openMessage();
    assert.ok(isMessageId(s.msgid), s.msgid);
    await writeMessage(s);
    assert.equal(await q.listMessages(), []);
    assert.equal(await q.nextDue(), null);
    await s.commit({ sender: 'a@here.example', recipients: ['x@there.example', 'y@there.example'], via: 'test', client: '192.0.2.1' });
    const m = (await q.getMessage(s.msgid))!;
    assert.equal(m.created, clock());
    assert.equal(m.size, s.size);
    assert.equal(m.recipients.map((r) => r.envId), [envelopeId(s.msgid, 0), envelopeId(s.msgid, 1)]);
    assert.ok(m.recipients.every((r) => isEnvelopeId(r.envId) && messageIdOf(r.envId) === s.msgid));
    assert.equal(m.recipients.map((r) => [r.status, r.attempts, r.nextAttempt, r.firstAttempt]), [['queued', 0, clock(), null], ['queued', 0, clock(), null]]);
    // An envelope id names its message too; lower case is the same id.
    assert.equal((await q.getMessage(m.recipients[1]!.envId.toLowerCase()))?.msgid, s.msgid);
    assert.equal(await q.getMessage('0000000000000000'), undefined);
    assert.equal((await readAll(q.readBody(s.msgid))).toString('latin1'), HEAD + '\r\n' + BODY);
    await q.close();
  });

  test(name('due: oldest first, up to the limit, not before notBefore; nextDue is the earliest'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const t0 = clock();
    const late = await committed(q, ['late@there.example'], { notBefore: t0 + 60_000 });
    clock.step(1000);
    const first = await committed(q, ['one@there.example', 'two@there.example']);
    clock.step(1000);
    const second = await committed(q, ['three@there.example']);
    assert.equal(await q.nextDue(), t0 + 1000);
    assert.equal((await q.due(clock(), 10)).map((e) => e.recipient), ['one@there.example', 'two@there.example', 'three@there.example']);
    assert.equal((await q.due(clock(), 2)).map((e) => e.msgid), [first, first]);
    assert.equal((await q.due(t0 + 1000, 10)).length, 2);
    assert.equal((await q.due(t0 + 60_000, 10)).map((e) => e.msgid), [first, first, second, late]);
    const e = (await q.due(clock(), 1))[0]!;
    assert.equal([e.sender, e.via, e.created], ['a@here.example', 'test', t0 + 1000]);
    await q.close();
  });

  test(name('commit: a recipient waitingAt names is stored waiting (not due, counted by its route); releaseWaiting makes it due'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const s = q.openMessage();
    await writeMessage(s);
    const asked: string[] = [];
    await s.commit({
      sender: 'a@here.example', recipients: ['x@there.example', 'y@there.example'], via: 'test',
      waitingAt: (r) => (asked.push(r), r.startsWith('x') ? { waiting: 'isp', lastError: 'route isp is offline', nextAttempt: clock() + 3_600_000 } : null),
    });
    assert.equal(asked, ['x@there.example', 'y@there.example']);
    const [x, y] = (await q.getMessage(s.msgid))!.recipients;
    assert.equal([x!.attempts, x!.nextAttempt, x!.lastError, x!.firstAttempt], [0, clock() + 3_600_000, 'route isp is offline', null]);
    assert.equal([y!.nextAttempt, y!.lastError], [clock(), null]);
    assert.equal((await q.due(clock(), 10)).map((e) => e.recipient), ['y@there.example']);
    assert.equal(await q.countByRoute(), { isp: 1, '*': 1 });
    clock.step(1000);
    assert.is(await q.releaseWaiting('isp'), 1);
    assert.equal((await q.due(clock(), 10)).map((e) => e.recipient), ['y@there.example', 'x@there.example']);
    await q.close();
  });

  test(name('updateEnvelopes records an attempt; the first attempt is when a route was tried, by the clock'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const id = await committed(q, ['x@there.example', 'y@there.example']);
    const [x, y] = (await q.getMessage(id))!.recipients;
    clock.step(5000);
    // Waiting for a route is no attempt: no route, no first attempt.
    await q.updateEnvelopes([
      { envId: x!.envId, attempts: 0, nextAttempt: clock() + 60_000, lastError: 'no route online', waiting: '*' },
      { envId: y!.envId, attempts: 1, nextAttempt: clock() + 300_000, lastError: '451 try later', warned: true, route: 'isp' },
    ]);
    const [x1, y1] = (await q.getMessage(id))!.recipients;
    assert.equal([x1!.attempts, x1!.nextAttempt, x1!.lastError, x1!.firstAttempt, x1!.warned], [0, clock() + 60_000, 'no route online', null, false]);
    assert.equal([y1!.attempts, y1!.nextAttempt, y1!.lastError, y1!.firstAttempt, y1!.warned], [1, clock() + 300_000, '451 try later', clock(), true]);
    const firstTry = clock();
    clock.step(300_000);
    await q.updateEnvelopes([{ envId: y!.envId, attempts: 2, nextAttempt: clock() + 600_000, lastError: '451 again', route: 'isp' }]);
    const y2 = (await q.getMessage(id))!.recipients[1]!;
    assert.equal([y2.attempts, y2.firstAttempt, y2.warned], [2, firstTry, true]);
    assert.equal(await q.countByRoute(), { '*': 1, isp: 1 });
    await q.close();
  });

  test(name('deleteEnvelopes: the message goes with its last recipient, and its body is gone (an error, never empty)'), async () => {
    const q = await b.open(tmpDir(), steppedClock());
    const id = await committed(q, ['x@there.example', 'y@there.example']);
    const other = await committed(q, ['z@there.example']);
    await q.deleteEnvelopes([envelopeId(id, 0)]);
    assert.equal((await q.getMessage(id))?.recipients.map((r) => r.recipient), ['y@there.example']);
    await q.deleteEnvelopes([envelopeId(id, 1)]);
    assert.equal(await q.getMessage(id), undefined);
    await readAll(q.readBody(id)).then(() => assert.unreachable('read a removed body'), (err: Error) => assert.match(err.message, /no body/));
    assert.equal((await q.listMessages()).map((m) => m.msgid), [other]);
    await q.deleteEnvelopes([]);
    await q.close();
  });

  test(name('addRecipients continues the envelope numbering, due now by the clock'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const id = await committed(q, ['alias@here.example']);
    clock.step(7000);
    await q.addRecipients(id, ['f1@there.example', 'f2@there.example']);
    const m = (await q.getMessage(id))!;
    assert.equal(m.recipients.map((r) => [r.envId, r.recipient, r.nextAttempt]), [
      [envelopeId(id, 0), 'alias@here.example', clock() - 7000],
      [envelopeId(id, 1), 'f1@there.example', clock()],
      [envelopeId(id, 2), 'f2@there.example', clock()],
    ]);
    await q.close();
  });

  test(name('origins: a committed origin is known, also after a reopen; a rolled-back one is not'), async () => {
    const dir = tmpDir();
    const q = await b.open(dir, steppedClock());
    await committed(q, ['x@there.example'], { origin: 'maildrop:abc:1' });
    const s = q.openMessage();
    await writeMessage(s);
    await s.rollback();
    const unfinished = q.openMessage();
    await unfinished.write(Buffer.alloc(200_000, 66)); // a session that died mid-DATA
    assert.equal(await q.hasOrigin('maildrop:abc:1'), true);
    assert.equal(await q.hasOrigin('maildrop:abc:2'), false);
    await q.close();
    const again = await b.open(dir, steppedClock());
    assert.equal(await again.hasOrigin('maildrop:abc:1'), true);
    assert.equal((await again.listMessages()).length, 1);
    await again.close();
  });

  test(name('admin: hold takes envelopes out of due; requeue releases them due now; removeMessage by either id'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const a = await committed(q, ['x@there.example', 'y@there.example']);
    const c = await committed(q, ['z@there.example']);
    assert.equal(await q.hold(envelopeId(a, 1)), 1);
    assert.equal((await q.due(clock(), 10)).map((e) => e.recipient), ['x@there.example', 'z@there.example']);
    assert.equal(await q.hold(a), 2);
    assert.equal((await q.getMessage(a))!.recipients.map((r) => r.status), ['hold', 'hold']);
    // requeue(null) makes every *queued* envelope due: held mail stays held.
    await q.updateEnvelopes([{ envId: envelopeId(c, 0), attempts: 1, nextAttempt: clock() + 3_600_000, lastError: '451', route: 'isp' }]);
    clock.step(1000);
    assert.equal(await q.requeue(null), 1);
    assert.equal((await q.due(clock(), 10)).map((e) => e.msgid), [c]);
    assert.equal(await q.requeue(a), 2);
    assert.equal((await q.getMessage(a))!.recipients.map((r) => [r.status, r.nextAttempt]), [['queued', clock()], ['queued', clock()]]);
    assert.equal(await q.removeMessage(envelopeId(a, 1)), true);
    assert.equal(await q.getMessage(a), undefined);
    assert.equal(await q.removeMessage(a), false);
    assert.equal(await q.hold('0000000000000000'), 0);
    await q.close();
  });

  test(name('admin: flushRoute and releaseWaiting make mail for a route due now; countByRoute counts it'), async () => {
    const clock = steppedClock();
    const q = await b.open(tmpDir(), clock);
    const id = await committed(q, ['w1@there.example', 'w2@there.example', 'd@there.example', 'any@there.example']);
    const later = clock() + 3_600_000;
    await q.updateEnvelopes([
      { envId: envelopeId(id, 0), attempts: 0, nextAttempt: later, lastError: 'isp offline', waiting: 'isp' },
      { envId: envelopeId(id, 1), attempts: 0, nextAttempt: later, lastError: 'backup offline', waiting: 'backup' },
      { envId: envelopeId(id, 2), attempts: 1, nextAttempt: later, lastError: '451', route: 'isp' },
      { envId: envelopeId(id, 3), attempts: 0, nextAttempt: later, lastError: 'no route online', waiting: '*' },
    ]);
    assert.equal(await q.countByRoute(), { isp: 2, backup: 1, '*': 1 });
    assert.equal(await q.due(clock(), 10), []);
    clock.step(1000);
    // Waiting for isp, waiting for any route, and deferred on isp.
    assert.equal(await q.flushRoute('isp'), 3);
    assert.equal((await q.due(clock(), 10)).map((e) => e.recipient).sort(), ['any@there.example', 'd@there.example', 'w1@there.example']);
    assert.equal(await q.releaseWaiting('backup'), 1);
    assert.equal((await q.due(clock(), 10)).length, 4);
    // Released envelopes no longer wait: a second release finds none.
    assert.equal(await q.releaseWaiting(null), 0);
    assert.equal(await q.countByRoute(), { isp: 1, '*': 3 });
    await q.close();
  });

  test(name('bodies of any size come back byte for byte, after a reopen too'), async () => {
    const dir = tmpDir();
    const q = await b.open(dir, steppedClock());
    const s = q.openMessage();
    const body = Buffer.alloc(300_001);
    for (let i = 0; i < body.length; i++) body[i] = (i * 131) & 0xff;
    for (let i = 0; i < body.length; i += 65_000) await s.write(body.subarray(i, i + 65_000));
    await s.commit({ sender: "o'brien@here.example", recipients: ['x@there.example'], via: 'test' });
    await q.close();
    const again = await b.open(dir, steppedClock());
    assert.ok((await readAll(again.readBody(s.msgid))).equals(body));
    assert.equal((await again.getMessage(s.msgid))?.sender, "o'brien@here.example");
    await again.close();
  });
}

test.run();
