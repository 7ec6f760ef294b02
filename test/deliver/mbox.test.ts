// mbox delivery, read back with a real mbox reader (Python's mailbox.mbox), plus the dotlock:
// waiting for a held lock, giving up, stale locks, and no half messages after a failure.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { deliverMbox, fromLine, MboxrdQuote } from '../../src/deliver/mbox.js';
import { sleep } from '../helpers/ports.js';
import { cleanupTmp, isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

interface Parsed {
  from: string;
  returnPath: string | null;
  deliveredTo: string | null;
  subject: string | null;
  body: string;
}

/** The mailbox as Python's mailbox.mbox sees it. */
function readMbox(file: string): Parsed[] {
  const py = `
import json, mailbox, sys
out = []
for m in mailbox.mbox(sys.argv[1], create=False):
    out.append({"from": m.get_from(), "returnPath": m["Return-Path"], "deliveredTo": m["Delivered-To"],
                "subject": m["Subject"], "body": m.get_payload(decode=False)})
print(json.dumps(out))
`;
  return JSON.parse(execFileSync('python3', ['-c', py, file], { encoding: 'utf8' })) as Parsed[];
}

const body = (raw: string | Buffer, chunk = 1 << 16) => () => {
  const b = Buffer.from(raw);
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += chunk) parts.push(b.subarray(i, i + chunk));
  return Readable.from(parts);
};
const msg = (subject: string, text: string) => `From: a@example.org\r\nSubject: ${subject}\r\n\r\n${text}`;
const FAST = { lockRetryMs: 20 };

test('several deliveries read back as separate messages; "From " lines are quoted, not split', async () => {
  const file = path.join(tmpDir(), 'user');
  const bodies = [
    'plain body\r\n',
    'From me, with love\r\n>From quoted already\r\n>>From twice\r\nFromage is not a From_ line\r\n',
    'no newline at the end',
    'From at the very end\r\n',
  ];
  for (const [i, text] of bodies.entries()) {
    // Tiny chunks: the quoting must work across chunk boundaries.
    const r = await deliverMbox(file, body(msg(`m${i}`, text), 3), { sender: i === 2 ? '' : 'a@example.org', recipient: `u${i}@example.org` }, FAST);
    assert.is(r.outcome, 'ok', r.message);
  }
  const got = readMbox(file);
  assert.is(got.length, 4);
  assert.equal(got.map((m) => m.subject), ['m0', 'm1', 'm2', 'm3']);
  assert.equal(got.map((m) => m.deliveredTo), ['u0@example.org', 'u1@example.org', 'u2@example.org', 'u3@example.org']);
  assert.equal(got.map((m) => m.returnPath), ['<a@example.org>', '<a@example.org>', '<>', '<a@example.org>']);
  assert.match(got[0]!.from, /^a@example\.org \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$/);
  assert.match(got[2]!.from, /^MAILER-DAEMON /);
  // Python's reader does not undo mboxrd quoting, so the stored lines show it.
  assert.is(got[0]!.body, 'plain body\n');
  assert.is(got[1]!.body, '>From me, with love\n>>From quoted already\n>>>From twice\nFromage is not a From_ line\n');
  assert.is(got[2]!.body, 'no newline at the end\n');
  assert.is(got[3]!.body, '>From at the very end\n');
  // Every message ends with an empty line; no CR anywhere.
  const raw = fs.readFileSync(file, 'latin1');
  assert.ok(raw.endsWith('>From at the very end\n\n'));
  assert.not.match(raw, /\r/);
  assert.is(raw.match(/^From /gm)!.length, 4);
  assert.is(fs.statSync(file).mode & 0o777, 0o600);
});

test('mboxrd quoting splits nowhere: every chunk boundary gives the same bytes', async () => {
  const input = 'From x\n>From y\n>>>From z\nFrom\nFro\n>\n>>Frm\n\nFrom ';
  const want = '>From x\n>>From y\n>>>>From z\nFrom\nFro\n>\n>>Frm\n\n>From ';
  for (let cut = 0; cut <= input.length; cut++) {
    const q = new MboxrdQuote();
    const chunks: Buffer[] = [];
    q.on('data', (c: Buffer) => chunks.push(c));
    q.write(Buffer.from(input.slice(0, cut)));
    q.end(Buffer.from(input.slice(cut)));
    await new Promise((r) => q.on('end', r));
    assert.is(Buffer.concat(chunks).toString(), want, `cut at ${cut}`);
    assert.is(q.endsWithNewline, false);
  }
});

test('the From_ line has asctime(3) form with a space-padded day', () => {
  assert.is(fromLine('a@b.example', new Date(2024, 5, 3, 9, 5, 7)), 'From a@b.example Mon Jun  3 09:05:07 2024\n');
  assert.is(fromLine('', new Date(2024, 11, 24, 23, 59, 59)), 'From MAILER-DAEMON Tue Dec 24 23:59:59 2024\n');
  assert.is(fromLine('"a b"@c.example', new Date(2024, 0, 1)), 'From "a_b"@c.example Mon Jan  1 00:00:00 2024\n');
});

test('a mailbox whose last message lacks the closing empty line still parses after we append', async () => {
  const file = writeFile(path.join(tmpDir(), 'user'), 'From old@example.org Mon Jan  1 00:00:00 2024\nSubject: old\n\nold body\n', 0o600);
  const r = await deliverMbox(file, body(msg('new', 'new body\r\n')), { sender: 'a@example.org', recipient: 'u@example.org' }, FAST);
  assert.is(r.outcome, 'ok');
  const got = readMbox(file);
  assert.equal(got.map((m) => [m.subject, m.body]), [['old', 'old body\n'], ['new', 'new body\n']]);
});

test('a held lock makes delivery wait; it goes through once the lock is released', async () => {
  const file = path.join(tmpDir(), 'user');
  writeFile(`${file}.lock`, '12345\n');
  let done = false;
  const pending = deliverMbox(file, body(msg('waited', 'x\r\n')), { sender: 'a@example.org', recipient: 'u@example.org' }, { lockWaitMs: 10_000, lockRetryMs: 20 }).then((r) => {
    done = true;
    return r;
  });
  await sleep(400);
  assert.is(done, false, 'still waiting');
  assert.not.ok(fs.existsSync(file), 'nothing written while locked');
  fs.rmSync(`${file}.lock`);
  const r = await pending;
  assert.is(r.outcome, 'ok', r.message);
  assert.equal(readMbox(file).map((m) => m.subject), ['waited']);
  assert.not.ok(fs.existsSync(`${file}.lock`), 'our own lock is gone');
});

test('a lock that is never released: tempfail after the wait, and the other lock is left alone', async () => {
  const file = writeFile(path.join(tmpDir(), 'user'), '', 0o600);
  writeFile(`${file}.lock`, '12345\n');
  const t0 = Date.now();
  const r = await deliverMbox(file, body(msg('never', 'x\r\n')), { sender: 'a@example.org', recipient: 'u@example.org' }, { lockWaitMs: 300, lockRetryMs: 20 });
  assert.ok(Date.now() - t0 >= 300);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /^4\.2\.0 .*user is locked by another program \(.*user\.lock, waited 300 ms\)$/);
  assert.is(fs.readFileSync(`${file}.lock`, 'utf8'), '12345\n');
  assert.is(fs.statSync(file).size, 0);
});

test('a stale lock (untouched for longer than the limit) is removed and delivery goes ahead', async () => {
  const file = path.join(tmpDir(), 'user');
  writeFile(`${file}.lock`, '12345\n');
  const old = new Date(Date.now() - 10 * 60_000);
  fs.utimesSync(`${file}.lock`, old, old);
  const r = await deliverMbox(file, body(msg('after stale', 'x\r\n')), { sender: 'a@example.org', recipient: 'u@example.org' }, { lockWaitMs: 1000, lockRetryMs: 20 });
  assert.is(r.outcome, 'ok', r.message);
  assert.equal(readMbox(file).map((m) => m.subject), ['after stale']);
  assert.not.ok(fs.existsSync(`${file}.lock`));
});

test('a failure in the middle cuts the file back: no half message, lock released', async () => {
  const file = path.join(tmpDir(), 'user');
  const info = { sender: 'a@example.org', recipient: 'u@example.org' };
  assert.is((await deliverMbox(file, body(msg('first', 'one\r\n')), info, FAST)).outcome, 'ok');
  const before = fs.readFileSync(file);
  const failing = () =>
    Readable.from(
      (async function* () {
        yield Buffer.from(msg('broken', 'From here\r\n' + 'z'.repeat(200_000)));
        throw new Error('queue file vanished');
      })(),
    );
  const r = await deliverMbox(file, failing, info, FAST);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /cannot read the queued message: queue file vanished/);
  assert.ok(fs.readFileSync(file).equals(before), 'the mailbox is as it was');
  assert.not.ok(fs.existsSync(`${file}.lock`));
  assert.is((await deliverMbox(file, body(msg('third', 'three\r\n')), info, FAST)).outcome, 'ok');
  assert.equal(readMbox(file).map((m) => m.subject), ['first', 'third']);
});

test('a symbolic link in place of the mailbox is refused (tempfail); its target is untouched', async () => {
  const dir = tmpDir();
  const target = writeFile(path.join(dir, 'elsewhere'), 'precious\n');
  fs.symlinkSync(target, path.join(dir, 'user'));
  const r = await deliverMbox(path.join(dir, 'user'), body(msg('x', 'x\r\n')), { sender: 'a@example.org', recipient: 'u@example.org' }, FAST);
  assert.is(r.outcome, 'tempfail');
  assert.match(r.message, /is a symbolic link/);
  assert.is(fs.readFileSync(target, 'utf8'), 'precious\n');
  assert.not.ok(fs.existsSync(path.join(dir, 'user.lock')));
});

test('as root, a mailbox we create belongs to the user; an existing one keeps its owner', async () => {
  if (!isRoot()) return; // only root can give files away
  const dir = tmpDir();
  const user = { name: 'nobody', uid: 65534, gid: 65534, home: '/nonexistent' };
  const r = await deliverMbox(path.join(dir, 'nobody'), body(msg('x', 'x\r\n')), { sender: 'a@example.org', recipient: 'nobody@example.org', user }, FAST);
  assert.is(r.outcome, 'ok');
  const st = fs.statSync(path.join(dir, 'nobody'));
  assert.equal([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o600]);
  const existing = writeFile(path.join(dir, 'other'), '', 0o600);
  await deliverMbox(existing, body(msg('x', 'x\r\n')), { sender: 'a@example.org', recipient: 'nobody@example.org', user }, FAST);
  assert.is(fs.statSync(existing).uid, 0);
});

test.run();
