// The fetch job against a real, private Dovecot: UIDL memory across runs and restarts,
// keep = false deleting only after submit, wrong passwords, SASL PLAIN, STLS and POP3S with a
// test CA (and without it), max size with oversize = skip | headers, recipients from headers, a
// 5 MB message streamed byte-exact, a 50 MB one with RSS measured, and a submit that fails
// half-way. What Dovecot always does right (UIDL, TOP, whole RETRs) is taken away in
// pop3-server-quirks.test.ts.

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FetchAccount } from '../../src/fetch/account.js';
import { fetchAccount, MessageRefused } from '../../src/fetch/pop3.js';
import { testCerts } from '../helpers/certs.js';
import { waitFor } from '../helpers/ports.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { collector, fetchAccountConfig, message, subjects } from '../helpers/fetch-job.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const USERS = {
  keeper: 'k33p', deleter: 'd3l', wrongpw: 'right', sizer: 's1ze', big: 'b1g', failer: 'f41l',
  sasl: 's4sl', refuser: 'r3f', stls: 'st1s', pop3s: 'p0p3s', untrusted: 'untr', header: 'h3ad', multi: 'mu1t', huge: 'hug3',
};
let dc: Dovecot;
let stateDir: string;

test.before(async () => {
  if (!haveDovecot()) throw new Error('dovecot is not installed (apt-get install dovecot-pop3d; .ci/run does this)');
  dc = await startDovecot({ users: USERS, apop: true, tls: true });
  stateDir = tmpDir('tidemail-fetch-');
});
test.after(async () => {
  await dc?.stop();
  cleanupTmp();
});

const account = (user: keyof typeof USERS, over: Partial<FetchAccount> = {}): FetchAccount =>
  fetchAccountConfig(`isp/${user}`, dc.port, { user, password: USERS[user], ...over });

test('keep = true: three messages once, then none — also after reopening the store', async () => {
  for (const s of ['one', 'two', 'three']) dc.deliver('keeper', message(s));
  const pwFile = writeFile(path.join(stateDir, 'keeper.pw'), 'k33p\n', 0o600);
  const acct = account('keeper', { password: '', passwordFile: pwFile });
  let uidls = await UidlStore.open(stateDir);
  const first = collector(uidls);
  const progress: { done: number; total: number; bytes: number }[] = [];
  first.onProgress = (p) => void progress.push(p);
  const r1 = await fetchAccount(acct, first);
  assert.equal(r1.error, undefined);
  assert.equal([r1.fetched, r1.deleted, r1.skipped], [3, 0, 0]);
  assert.equal(subjects(first.got), ['one', 'three', 'two']);
  assert.equal(first.got.find((m) => m.includes('Subject: one')), message('one'));
  assert.equal(r1.bytes, first.got.reduce((n, m) => n + Buffer.byteLength(m), 0));
  assert.equal(progress.map((p) => `${p.done}/${p.total}`), ['0/3', '1/3', '2/3', '3/3']);
  assert.equal(dc.mailbox('keeper').length, 3);

  const second = collector(uidls);
  const r2 = await fetchAccount(acct, second);
  assert.equal([r2.fetched, r2.error], [0, undefined]);

  await uidls.close();
  uidls = await UidlStore.open(stateDir);
  dc.deliver('keeper', message('four'));
  const third = collector(uidls);
  const r3 = await fetchAccount(acct, third);
  assert.equal([r3.fetched, r3.error], [1, undefined]);
  assert.equal(subjects(third.got), ['four']);
  await uidls.close();
});

test('keep = false: messages are deleted on the server after submit', async () => {
  for (const s of ['a', 'b', 'c']) dc.deliver('deleter', message(s));
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  const r = await fetchAccount(account('deleter', { keep: false }), deps);
  assert.equal(r.error, undefined);
  assert.equal([r.fetched, r.deleted], [3, 3]);
  assert.equal(subjects(deps.got), ['a', 'b', 'c']);
  assert.equal(dc.mailbox('deleter'), []);
  const again = await fetchAccount(account('deleter', { keep: false }), collector(uidls));
  assert.equal([again.fetched, again.error], [0, undefined]);
  await uidls.close();
});

test('a wrong password: authFailed and a clear error, no throw, password not shown', async () => {
  dc.deliver('wrongpw', message('x'));
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  for (const auth of ['user', 'auto'] as const) {
    const r = await fetchAccount(account('wrongpw', { password: 'not-the-one', auth }), deps);
    assert.ok(r.authFailed, auth);
    assert.match(r.error ?? '', /POP3 login to 127\.0\.0\.1:\d+ as wrongpw refused \(wrong user name or password\?\): -ERR/);
    assert.not.match(r.error ?? '', /not-the-one/);
    assert.equal(r.fetched, 0);
  }
  assert.equal(deps.calls, 0);
  const unreachable = await fetchAccount(account('wrongpw', { port: 1 }), deps);
  assert.match(unreachable.error ?? '', /cannot connect to POP3 server 127\.0\.0\.1:1/);
  assert.not.ok(unreachable.authFailed);
  await uidls.close();
});

test('auth = "plain": SASL PLAIN login, mail fetched; a wrong password is authFailed', async () => {
  dc.deliver('sasl', message('sasl1'));
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  const r = await fetchAccount(account('sasl', { auth: 'plain' }), deps);
  assert.equal([r.fetched, r.error], [1, undefined]);
  assert.equal(subjects(deps.got), ['sasl1']);
  const bad = await fetchAccount(account('sasl', { auth: 'plain', password: 'nope' }), deps);
  assert.ok(bad.authFailed);
  assert.match(bad.error ?? '', /as sasl refused \(wrong user name or password\?\): -ERR \[AUTH\]/);
  await uidls.close();
});

test('STLS and POP3S: fetched with the certificate verified against tls_ca_file', async () => {
  const uidls = await UidlStore.open(stateDir);
  for (const [user, tls, port] of [['stls', 'starttls', dc.port], ['pop3s', 'implicit', dc.tlsPort]] as const) {
    dc.deliver(user, message(`over ${tls}`));
    const deps = collector(uidls);
    // By name, as a real account would be: the certificate is for localhost and 127.0.0.1.
    const r = await fetchAccount(account(user, { host: 'localhost', port, tls, caFile: testCerts().caFile, keep: false }), deps);
    assert.equal([r.fetched, r.deleted, r.error], [1, 1, undefined], tls);
    assert.equal(subjects(deps.got), [`over ${tls}`]);
    assert.equal(dc.mailbox(user), []);
    // Over TLS "auto" prefers SASL PLAIN to APOP (Dovecot logs USER/PASS as PLAIN too; the
    // client tests tell those apart on the wire).
    await waitFor(`a TLS login of ${user}`, () => new RegExp(`Login: user=<${user}>, method=PLAIN, .*TLS`).test(dc.log()));
  }
  await uidls.close();
});

test('an untrusted certificate: tlsFailed, an error that says what to set, nothing fetched or deleted', async () => {
  dc.deliver('untrusted', message('secret'));
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  for (const [tls, port] of [['starttls', dc.port], ['implicit', dc.tlsPort]] as const) {
    const r = await fetchAccount(account('untrusted', { tls, port, keep: false }), deps);
    assert.ok(r.tlsFailed, tls);
    assert.not.ok(r.authFailed);
    assert.match(r.error ?? '', /TLS to POP3 server 127\.0\.0\.1:\d+ failed: .*(self.signed|unable to (verify|get local issuer))/i);
    assert.match(r.error ?? '', /set tls_ca_file in the \[\[fetch\]\] entry of account "isp\/untrusted"/);
    assert.equal(r.fetched, 0);
  }
  // A CA that is not the server's: still refused.
  const otherCa = writeFile(path.join(stateDir, 'other-ca.pem'), fs.readFileSync('/etc/ssl/certs/ca-certificates.crt'), 0o644);
  const r = await fetchAccount(account('untrusted', { tls: 'implicit', port: dc.tlsPort, caFile: otherCa }), deps);
  assert.ok(r.tlsFailed);
  assert.not.match(r.error ?? '', /set tls_ca_file/);
  assert.equal(deps.calls, 0);
  assert.equal(dc.mailbox('untrusted').length, 1);
  assert.equal(dc.logins('untrusted'), 0, 'the password was sent to an unverified server');
  await uidls.close();
});

test('max size: a larger message is skipped, left on the server, and remembered', async () => {
  dc.deliver('sizer', message('small'));
  dc.deliver('sizer', message('large', 'x'.repeat(10_000) + '\r\n'));
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  const acct = account('sizer', { keep: false, maxSize: 5000 });
  const r = await fetchAccount(acct, deps);
  assert.equal(r.error, undefined);
  assert.equal([r.fetched, r.deleted, r.skipped], [1, 1, 1]);
  assert.equal(subjects(deps.got), ['small']);
  assert.equal(dc.mailbox('sizer').length, 1);
  const again = await fetchAccount(acct, collector(uidls));
  assert.equal([again.fetched, again.skipped, again.error], [0, 0, undefined]);
  await uidls.close();
});

test('oversize = "headers": the header section arrives with a note, the message stays on the server', async () => {
  const big = `From: a@example.test\r\nTo: me@example.test\r\nSubject: large\r\nMessage-ID: <large@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary="b1"\r\n\r\n--b1\r\n${'x'.repeat(10_000)}\r\n--b1--\r\n`;
  dc.deliver('header', message('small'));
  dc.deliver('header', big);
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  const acct = account('header', { keep: false, maxSize: 5000, oversize: 'headers' });
  const r = await fetchAccount(acct, deps);
  assert.equal(r.error, undefined);
  assert.equal([r.fetched, r.deleted, r.skipped, r.headersOnly], [1, 1, 1, 1]);
  assert.equal(subjects(deps.got), ['large', 'small']);
  const note = deps.got.find((m) => m.includes('Subject: large'))!;
  assert.match(note, new RegExp(`^X-Tidemail-Oversize: ${Buffer.byteLength(big)} bytes, over max_size 5000; only the header section was fetched, the message is left on 127\\.0\\.0\\.1 \\(account isp/header\\)\\r\\n`));
  assert.match(note, /\r\nMessage-ID: <large@example\.test>\r\n/);
  assert.match(note, /\r\nX-Original-Content-Type: multipart\/mixed;\r\n boundary="b1"\r\nContent-Type: text\/plain; charset=us-ascii\r\n\r\nThis message is \d+ bytes/);
  assert.not.match(note, /xxxx|--b1/);
  assert.equal(r.bytes, deps.got.reduce((n, m) => n + Buffer.byteLength(m), 0));
  assert.equal(dc.mailbox('header').length, 1, 'the large message must stay on the server');
  const again = await fetchAccount(acct, collector(uidls));
  assert.equal([again.fetched, again.skipped, again.deleted, again.error], [0, 0, 0, undefined]);
  assert.equal(dc.mailbox('header').length, 1);
  await uidls.close();
});

test('recipients_from: a multidrop mailbox is sorted by envelope headers in local domains, else deliver_to', async () => {
  const mails = {
    dt: 'Delivered-To: box@isp.example\r\nDelivered-To: Bob@Example.org\r\nTo: all@example.org\r\nSubject: dt\r\n\r\nx\r\n',
    xot: 'X-Original-To: "Someone <x@example.org>" <carol@EXAMPLE.org>,\r\n dave@example.org (Dave <y@example.org>)\r\nTo: list@example.org\r\nSubject: xot\r\n\r\nx\r\n',
    stranger: 'Delivered-To: eve@elsewhere.example\r\nTo: eve@elsewhere.example\r\nSubject: stranger\r\n\r\nx\r\n',
    none: 'To: friend@example.org\r\nSubject: none\r\n\r\nDelivered-To: notme@example.org\r\n',
  };
  for (const m of Object.values(mails)) dc.deliver('multi', m);
  const uidls = await UidlStore.open(stateDir);
  const deps = collector(uidls);
  const r = await fetchAccount(account('multi', { deliverTo: ['postmaster'], recipientsFrom: ['Delivered-To', 'X-Original-To'], recipientsDomains: ['example.org'] }), deps);
  assert.equal([r.fetched, r.error], [4, undefined]);
  const bySubject = Object.fromEntries(deps.got.map((m, i) => [/Subject: (\w+)/.exec(m)![1]!, deps.envelopes[i]]));
  assert.equal(bySubject.dt, { recipients: ['Bob'], from: 'Delivered-To' });
  assert.equal(bySubject.xot, { recipients: ['carol', 'dave'], from: 'X-Original-To' });
  assert.equal(bySubject.stranger, { recipients: ['postmaster'] });
  assert.equal(bySubject.none, { recipients: ['postmaster'] }, 'a header-like line in the body counts');
  assert.equal(deps.got.find((m) => m.includes('Subject: xot')), mails.xot, 'the message itself is unchanged');
  await uidls.close();
});

test('a 50 MB message over STLS streams through: byte-exact, RSS grows far less than the message', async () => {
  // Written to disk in 1 MiB blocks: the test must not hold the message either.
  const file = path.join(stateDir, 'huge.eml');
  const fd = fs.openSync(file, 'w');
  const expect = createHash('sha256');
  const put = (b: Buffer) => (fs.writeSync(fd, b), expect.update(b));
  put(Buffer.from('From: a@example.test\r\nSubject: huge\r\n\r\n'));
  const block = Buffer.from(('.dot-stuffed on the wire ' + 'y'.repeat(50) + '\r\n').repeat(13_500));
  for (let i = 0; i < 50; i++) put(block);
  fs.closeSync(fd);
  const size = fs.statSync(file).size;
  dc.deliverFile('huge', file);
  const uidls = await UidlStore.open(stateDir);
  const got = createHash('sha256');
  let bytes = 0;
  let peak = 0;
  const base = process.memoryUsage().rss;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss - base)), 5);
  const progress: number[] = [];
  const r = await fetchAccount(account('huge', { host: 'localhost', tls: 'starttls', caFile: testCerts().caFile, keep: false }), {
    uidls,
    onProgress: (p) => void progress.push(p.bytes),
    async submit(_a, body) {
      for await (const c of body) {
        got.update(c);
        bytes += c.length;
      }
    },
  });
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss - base);
  assert.equal(r.error, undefined);
  assert.equal([r.fetched, r.deleted, r.bytes, bytes], [1, 1, size, size]);
  assert.equal(got.digest('hex'), expect.digest('hex'));
  assert.ok(progress.length > 100 && progress.some((b) => b > 0 && b < size), 'progress within the message');
  const mib = peak / 1048576;
  console.log(`  50 MB fetch over STLS: RSS grew ${mib.toFixed(1)} MiB`);
  assert.ok(mib < 32, `RSS grew ${mib.toFixed(1)} MiB for a ${(size / 1048576).toFixed(0)} MiB message`);
  assert.equal(dc.mailbox('huge'), []);
  await uidls.close();
});

test('a message refused by a check stays on the server; the others are fetched; a tempfail is retried', async () => {
  for (const s of ['ok1', 'spam', 'busy', 'ok2']) dc.deliver('refuser', message(s));
  const uidls = await UidlStore.open(stateDir);
  const acct = account('refuser', { keep: false });
  const got: string[] = [];
  let busy = true;
  const submit = async (_a: FetchAccount, body: AsyncIterable<Buffer>) => {
    let text = '';
    for await (const c of body) text += c.toString('utf8');
    const subject = /Subject: (\w+)/.exec(text)![1]!;
    if (subject === 'spam') throw new MessageRefused('refused by check spamd: 550 5.7.1 spam', true);
    if (subject === 'busy' && busy) throw new MessageRefused('refused by check clamd: 451 4.7.1 scanner busy', false);
    got.push(subject);
  };
  const r = await fetchAccount(acct, { uidls, submit });
  assert.equal([r.fetched, r.deleted, r.refused, r.error], [2, 2, 2, undefined]);
  assert.equal(got.sort(), ['ok1', 'ok2']);
  assert.equal(dc.mailbox('refuser').length, 2);
  busy = false;
  const r2 = await fetchAccount(acct, { uidls, submit });
  assert.equal([r2.fetched, r2.deleted, r2.refused, r2.error], [1, 1, undefined, undefined], 'only the tempfailed one again');
  assert.equal(got.sort(), ['busy', 'ok1', 'ok2']);
  assert.equal(dc.mailbox('refuser').length, 1, 'the refused one stays');
  await uidls.close();
});

test('a 5 MB message streams through submit byte-exact, in bounded chunks', async () => {
  const line = 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(2) + '\r\n';
  const dotty = '.starts with a dot\r\n..two\r\n';
  let body = '';
  while (body.length < 5 * 1024 * 1024) body += line + (body.length % 100_000 < 80 ? dotty : '');
  const raw = Buffer.from(message('big', body));
  dc.deliver('big', raw);
  const uidls = await UidlStore.open(stateDir);
  const hash = createHash('sha256');
  let size = 0;
  let chunks = 0;
  let largest = 0;
  const r = await fetchAccount(account('big', { keep: false }), {
    uidls,
    async submit(_a, b) {
      for await (const c of b) {
        hash.update(c);
        size += c.length;
        chunks++;
        largest = Math.max(largest, c.length);
        await new Promise((res) => setImmediate(res)); // a slow consumer
      }
    },
  });
  assert.equal(r.error, undefined);
  assert.equal([r.fetched, r.deleted, r.bytes], [1, 1, raw.length]);
  assert.equal(size, raw.length);
  assert.equal(hash.digest('hex'), createHash('sha256').update(raw).digest('hex'));
  assert.ok(chunks > 10, `only ${chunks} chunks`);
  assert.ok(largest < 256 * 1024, `a chunk of ${largest} bytes`);
  assert.equal(dc.mailbox('big'), []);
  await uidls.close();
});

test('submit fails on message 2: message 1 is remembered and deleted, message 2 is not', async () => {
  for (const s of ['m1', 'm2', 'm3']) dc.deliver('failer', message(s, 'body\r\n'.repeat(20_000)));
  const uidls = await UidlStore.open(stateDir);
  const acct = account('failer', { keep: false });
  const bad = collector(uidls, 2);
  const r = await fetchAccount(acct, bad);
  assert.match(r.error ?? '', /message \d was not queued: queue disk full/);
  assert.not.ok(r.authFailed);
  assert.equal([r.fetched, r.deleted, bad.got.length], [1, 1, 1]);
  assert.equal(dc.mailbox('failer').length, 2);

  const good = collector(uidls);
  const r2 = await fetchAccount(acct, good);
  assert.equal(r2.error, undefined);
  assert.equal([r2.fetched, r2.deleted], [2, 2]);
  assert.equal([...subjects(bad.got), ...subjects(good.got)].sort(), ['m1', 'm2', 'm3']);
  assert.equal(dc.mailbox('failer'), []);
  await uidls.close();
});

test.run();
