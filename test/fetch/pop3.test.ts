// The fetch job against a real, private Dovecot: UIDL memory across runs and restarts,
// keep = false deleting only after submit, wrong passwords, max size, a 5 MB message streamed
// byte-exact, and a submit that fails half-way. A scripted stand-in covers what Dovecot always
// does right: servers without UIDL (and TOP), a connection dropped mid-RETR, a non-POP3 reply.

import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FetchAccount } from '../../src/fetch/account.js';
import { fetchAccount, type FetchDeps } from '../../src/fetch/pop3.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

const USERS = { keeper: 'k33p', deleter: 'd3l', wrongpw: 'right', sizer: 's1ze', big: 'b1g', failer: 'f41l' };
let dc: Dovecot;
let stateDir: string;

test.before(async () => {
  if (!haveDovecot()) throw new Error('dovecot is not installed (apt-get install dovecot-pop3d; .ci/run does this)');
  dc = await startDovecot({ users: USERS, apop: true });
  stateDir = tmpDir('tidemail-fetch-');
});
test.after(async () => {
  await dc?.stop();
  cleanupTmp();
});

function account(user: keyof typeof USERS, over: Partial<FetchAccount> = {}): FetchAccount {
  return {
    name: `isp/${user}`,
    route: 'isp',
    intervalMs: 300_000,
    host: '127.0.0.1',
    port: dc.port,
    tls: 'none',
    user,
    password: USERS[user],
    passwordFile: '',
    auth: 'auto',
    keep: true,
    deliverTo: ['me'],
    ...over,
  };
}

const message = (subject: string, body = 'hello\r\n') => `From: a@example.test\r\nTo: me@example.test\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@example.test>\r\n\r\n${body}`;

/** A submit that collects whole messages (fine for small ones) in `got`. */
function collector(uidls: UidlStore, failOn?: number): FetchDeps & { got: string[]; calls: number } {
  const deps = {
    uidls,
    got: [] as string[],
    calls: 0,
    async submit(_a: FetchAccount, body: AsyncIterable<Buffer>) {
      const call = ++deps.calls;
      const parts: Buffer[] = [];
      for await (const c of body) {
        parts.push(c);
        if (call === failOn) throw new Error('queue disk full');
      }
      deps.got.push(Buffer.concat(parts).toString('utf8'));
    },
  };
  return deps;
}

const subjects = (msgs: string[]) => msgs.map((m) => /Subject: (.*)\r\n/.exec(m)?.[1]).sort();

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
  assert.equal(progress.map((p) => `${p.done}/${p.total}`), ['1/3', '2/3', '3/3']);
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

interface FakeOptions {
  uidl: boolean;
  top: boolean;
  /** Close the connection half-way through RETR of this message number. */
  dropOnRetr?: number;
  greeting?: string;
}

/** A scripted POP3 server on loopback for what Dovecot cannot be made to do. */
async function fakePop3(messages: string[], o: FakeOptions): Promise<{ port: number; left: () => string[]; close: () => void }> {
  let box = [...messages];
  const server = net.createServer((sock) => {
    const deleted = new Set<number>();
    sock.write(`${o.greeting ?? '+OK fake ready'}\r\n`);
    let buf = '';
    sock.on('error', () => undefined);
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
        const [cmd = '', arg = ''] = buf.slice(0, i).split(' ');
        buf = buf.slice(i + 2);
        const n = Number(arg);
        const msg = box[n - 1];
        const multi = (lines: string[]) => sock.write(`+OK\r\n${lines.map((l) => (l.startsWith('.') ? '.' + l : l) + '\r\n').join('')}.\r\n`);
        switch (cmd.toUpperCase()) {
          case 'USER':
          case 'PASS':
          case 'DELE':
            if (cmd.toUpperCase() === 'DELE') deleted.add(n);
            sock.write('+OK\r\n');
            break;
          case 'CAPA':
            multi(['USER', ...(o.top ? ['TOP'] : []), ...(o.uidl ? ['UIDL'] : [])]);
            break;
          case 'LIST':
            multi(box.map((m, j) => `${j + 1} ${Buffer.byteLength(m)}`));
            break;
          case 'UIDL':
            if (o.uidl) multi(box.map((_m, j) => `${j + 1} u${j + 1}`));
            else sock.write('-ERR no UIDL here\r\n');
            break;
          case 'TOP':
            if (o.top && msg) multi(msg.split('\r\n\r\n')[0]!.split('\r\n').concat(''));
            else sock.write('-ERR no TOP here\r\n');
            break;
          case 'RETR':
            if (!msg) sock.write('-ERR no such message\r\n');
            else if (n === o.dropOnRetr) sock.end(`+OK\r\n${msg.slice(0, msg.length >> 1)}`);
            else multi(msg.replace(/\r\n$/, '').split('\r\n'));
            break;
          case 'QUIT':
            box = box.filter((_m, j) => !deleted.has(j + 1));
            sock.end('+OK bye\r\n');
            break;
          default:
            sock.write('-ERR unknown command\r\n');
        }
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, left: () => box, close: () => server.close() };
}

test('no UIDL: messages are told apart by their TOP headers, so keep = true still works', async () => {
  const fake = await fakePop3([message('t1'), message('t2'), 'Subject: no id\r\n\r\nx\r\n'], { uidl: false, top: true });
  const uidls = await UidlStore.open(stateDir);
  const acct = account('keeper', { name: 'fake/top', port: fake.port, auth: 'user' });
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
  const fake = await fakePop3([message('n1'), message('n2')], { uidl: false, top: false });
  const uidls = await UidlStore.open(stateDir);
  const kept = await fetchAccount(account('keeper', { name: 'fake/none', port: fake.port, auth: 'user' }), collector(uidls));
  assert.match(kept.error ?? '', /offers neither UIDL nor TOP.*set keep = false/);
  assert.equal(kept.fetched, 0);
  const deps = collector(uidls);
  const r = await fetchAccount(account('keeper', { name: 'fake/none', port: fake.port, auth: 'user', keep: false }), deps);
  assert.equal([r.fetched, r.deleted, r.error], [2, 2, undefined]);
  assert.equal(fake.left(), []);
  fake.close();
  await uidls.close();
});

test('a connection dropped mid-RETR: an error, nothing deleted, only the finished message remembered', async () => {
  const fake = await fakePop3([message('d1'), message('d2', 'y'.repeat(200_000) + '\r\n')], { uidl: true, top: true, dropOnRetr: 2 });
  const uidls = await UidlStore.open(stateDir);
  const acct = account('keeper', { name: 'fake/drop', port: fake.port, auth: 'user', keep: false });
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
  const fake = await fakePop3([], { uidl: true, top: true, greeting: '220 smtp.example ESMTP' });
  const uidls = await UidlStore.open(stateDir);
  const r = await fetchAccount(account('keeper', { name: 'fake/smtp', port: fake.port }), collector(uidls));
  assert.match(r.error ?? '', /not \+OK\/-ERR \(is this a POP3 server\?\)/);
  assert.not.ok(r.authFailed);
  fake.close();
  await uidls.close();
});

test.run();
