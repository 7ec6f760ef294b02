// The fetch job against a hostile POP3 server (test/helpers/hostile-pop3.ts): a RETR that says
// 200 bytes in LIST and then streams forever is cut at the cap, nothing of it is queued, no DELE,
// its UIDL not remembered, and the next automatic run leaves it alone while fetching the rest;
// the account's and the global size limits cap it lower; a server a little over its LIST size is
// still fetched. Siblings: endless UIDL, a drip-feed (overall deadline), a line with no end, a
// line sent one byte per packet (CPU), and escape codes in a server's -ERR.

import net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FetchAccount } from '../../src/fetch/account.js';
import { fetchAccount, retrLimit, type FetchDeps } from '../../src/fetch/pop3.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { fetchAccountConfig } from '../helpers/fetch-job.js';
import { startHostilePop3, type HostileOptions, type HostilePop3 } from '../helpers/hostile-pop3.js';
import { waitFor } from '../helpers/ports.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

let stateDir: string;
let uidls: UidlStore;
const servers: HostilePop3[] = [];
test.before(async () => {
  stateDir = tmpDir('tidemail-hostile-');
  uidls = await UidlStore.open(stateDir);
});
test.after.each(async () => {
  for (const s of servers.splice(0)) await s.close();
});
test.after(async () => {
  await uidls.close();
  cleanupTmp();
});

async function hostile(o: HostileOptions): Promise<HostilePop3> {
  const h = await startHostilePop3(o);
  servers.push(h);
  return h;
}

const account = (name: string, port: number, over: Partial<FetchAccount> = {}): FetchAccount =>
  fetchAccountConfig(name, port, { auth: 'user', keep: false, ...over });

/** A submit that counts what it is handed and keeps only whole messages (as the spool does). */
function counting(over: Partial<FetchDeps> = {}): FetchDeps & { got: string[]; handed: number } {
  const deps = {
    uidls,
    got: [] as string[],
    handed: 0,
    timeoutMs: 5000,
    async submit(_a: FetchAccount, body: AsyncIterable<Buffer>) {
      const parts: Buffer[] = [];
      for await (const c of body) {
        deps.handed += c.length;
        if (deps.handed < 4 * 1024 * 1024) parts.push(c); // bounded even if the fetch is not
      }
      deps.got.push(Buffer.concat(parts).toString('latin1'));
    },
    ...over,
  };
  return deps;
}

test('retrLimit: LIST size + 10 % + 64 KiB, lowered by max_size and max_message_size', () => {
  assert.equal(retrLimit(200, {}), { limit: 200 + 20 + 65536, by: 'LIST' });
  assert.equal(retrLimit(10_000_000, {}), { limit: 11_000_000 + 65536, by: 'LIST' });
  assert.equal(retrLimit(200, { maxSize: 1000 }), { limit: 1000, by: 'max_size' });
  assert.equal(retrLimit(200, { maxSize: 9000, maxMessageSize: 5000 }), { limit: 5000, by: 'max_message_size' });
});

test('RETR that says 200 bytes and streams forever: cut at the cap, nothing queued, no DELE, not remembered; next run holds it back', async () => {
  const h = await hostile({ hostility: 'endless-retr', messages: 3, badMessage: 2 });
  const acct = account('hostile/endless', h.port);
  const deps = counting();
  const started = Date.now();
  const r = await fetchAccount(acct, deps);
  const took = Date.now() - started;
  const limit = 200 + 20 + 65536;
  assert.match(r.error ?? '', new RegExp(`message 2 \\(UIDL u2\\) sent more than ${limit} bytes .*LIST said 200 bytes.*left on the server`));
  assert.equal(r.overLimit?.map((o) => [o.msg, o.uidl, o.listed, o.limit, o.by, !!o.held]), [[2, 'u2', 200, limit, 'LIST', false]]);
  assert.ok(r.overLimit![0]!.read > limit && r.overLimit![0]!.read < limit + 2 * 1024 * 1024, `read ${r.overLimit![0]!.read}`);
  assert.equal(r.fetched, 1, 'message 1 came before the bad one');
  assert.equal(deps.got.length, 1, 'only the whole first message was queued');
  assert.ok(deps.handed < limit + 2000, `submit was handed ${deps.handed} bytes`);
  assert.not.ok(h.commands.includes('DELE 2'), 'DELE for the bad message');
  assert.not.ok(h.commands.includes('QUIT'), 'QUIT after an abort would commit DELE 1 of a session cut short');
  assert.not.ok(h.commands.includes('RETR 3'), 'read on after the abort');
  assert.ok(await uidls.has(acct.name, 'u1'));
  assert.not.ok(await uidls.has(acct.name, 'u2'));
  await waitFor('the connection closed by us', () => h.closed === 1, 5000);
  // The kernel's socket buffers took some more; the point is "bounded", not "endless".
  assert.ok(h.sent() < 16 * 1024 * 1024, `server got ${h.sent()} bytes out`);
  console.log(`    endless RETR: cut after ${r.overLimit![0]!.read} bytes read, ${h.sent()} sent by the server, ${took} ms`);

  // Held back (what the scheduler does for automatic runs): message 3 is fetched, 2 left alone,
  // and message 1 (queued, but its DELE lost with the cut session) is deleted, not fetched again.
  const before = h.commands.length;
  const again = counting({ suspects: new Map([['u2', r.overLimit![0]!]]) });
  const r2 = await fetchAccount(acct, again);
  const session = h.commands.slice(before);
  assert.equal([r2.fetched, r2.deleted], [1, 2]);
  assert.not.ok(session.includes('RETR 2'), 'the held-back message was retrieved');
  assert.not.ok(session.includes('RETR 1'), 'message 1 fetched twice');
  assert.ok(session.includes('DELE 1'), `message 1 never deleted: ${session.join(', ')}`);
  assert.ok(session.includes('RETR 3') && session.includes('DELE 3') && session.includes('QUIT'), session.join(', '));
  // That QUIT was answered: those DELEs counted, and are not sent again (this server keeps all).
  const third = h.commands.length;
  const r3 = await fetchAccount(acct, counting({ suspects: new Map([['u2', r.overLimit![0]!]]) }));
  assert.equal([r3.fetched, r3.deleted], [0, 0]);
  assert.not.ok(h.commands.slice(third).some((c) => /^(RETR|DELE) /.test(c)), h.commands.slice(third).join(', '));
  assert.equal(r2.overLimit?.map((o) => [o.msg, o.uidl, !!o.held]), [[2, 'u2', true]]);
  assert.match(r2.error ?? '', /message 2 \(UIDL u2\) left on the server: .*`tidemail fetch hostile\/endless`/);
  assert.equal(again.got.length, 1);
  assert.match(again.got[0]!, /Subject: small 3/);
});

test('the account\'s max_size and the global max_message_size cap RETR lower than the LIST margin', async () => {
  const h = await hostile({ hostility: 'endless-retr' });
  const deps = counting();
  const r = await fetchAccount(account('hostile/max', h.port, { maxSize: 1000 }), deps);
  assert.equal(r.overLimit?.map((o) => [o.limit, o.by]), [[1000, 'max_size']]);
  assert.match(r.error ?? '', /sent more than 1000 bytes \(max_size; LIST said 200 bytes\)/);
  assert.ok(deps.handed <= 1000, `handed ${deps.handed}`);
  assert.equal(deps.got, []);
  const g = counting({ maxMessageSize: 4096 });
  const r2 = await fetchAccount(account('hostile/global', h.port), g);
  assert.equal(r2.overLimit?.map((o) => [o.limit, o.by]), [[4096, 'max_message_size']]);
  assert.equal(g.got, []);
});

test('a message somewhat larger than LIST said (line endings, stuffing) is still fetched', async () => {
  const h = await hostile({ hostility: 'slightly-larger' });
  const deps = counting();
  const r = await fetchAccount(account('hostile/larger', h.port), deps);
  assert.equal([r.error, r.fetched, r.deleted], [undefined, 1, 1]);
  assert.match(deps.got[0]!, /Subject: larger/);
});

test('UIDL that never ends: a clear error, bounded, nothing retrieved', async () => {
  const h = await hostile({ hostility: 'endless-uidl', messages: 2 });
  const r = await fetchAccount(account('hostile/uidl', h.port), counting());
  assert.match(r.error ?? '', /sent more than \d+ bytes in reply to UIDL; connection cut/);
  assert.not.ok(h.commands.some((c) => c.startsWith('RETR')));
  await waitFor('the connection closed by us', () => h.closed === 1, 5000);
  assert.ok(h.sent() < 40 * 1024 * 1024, `server got ${h.sent()} bytes out`);
});

test('a drip-feed (one byte every 200 ms, under the idle timeout) ends at the overall deadline', async () => {
  const h = await hostile({ hostility: 'drip-retr', dripMs: 200 });
  const deps = counting({ timeoutMs: 1000, minBytesPerSecond: 64 * 1024 });
  const started = Date.now();
  const r = await fetchAccount(account('hostile/drip', h.port), deps);
  const took = Date.now() - started;
  assert.match(r.error ?? '', /RETR 1 .*not finished within \d+ s/);
  assert.equal([r.fetched, r.deleted], [0, 0]);
  assert.equal(r.overLimit, undefined, 'slow is not over the limit');
  assert.ok(took < 8000, `took ${took} ms`);
  assert.not.ok(h.commands.includes('DELE 1'));
});

test('a line with no end: a clear error after a bounded read', async () => {
  const h = await hostile({ hostility: 'long-line' });
  const r = await fetchAccount(account('hostile/line', h.port), counting());
  assert.match(r.error ?? '', /line longer than \d+ bytes/);
  await waitFor('the connection closed by us', () => h.closed === 1, 5000);
  assert.ok(h.sent() < 16 * 1024 * 1024, `server got ${h.sent()} bytes out`);
});

test('a 60 kB line sent one byte per packet: read in linear time, the message fetched whole', async () => {
  // Each byte its own packet (no delay, one write per turn of the loop): the client gets 60k chunks.
  const LEN = 60_000;
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.on('error', () => undefined);
    s.write('+OK drip\r\n');
    s.on('data', (d) => {
      const cmd = d.toString('latin1');
      if (/^STAT/.test(cmd)) s.write('+OK 1 60100\r\n');
      else if (/^LIST/.test(cmd)) s.write('+OK\r\n1 60100\r\n.\r\n');
      else if (/^UIDL/.test(cmd)) s.write('+OK\r\n1 drip1\r\n.\r\n');
      else if (/^RETR/.test(cmd)) {
        s.write('+OK\r\nSubject: drip\r\n\r\n');
        let left = LEN;
        const one = Buffer.from('d');
        const pump = () => {
          if (s.destroyed) return;
          if (left-- <= 0) s.write('\r\n.\r\n');
          else (s.write(one), setImmediate(pump));
        };
        pump();
      } else if (/^QUIT/.test(cmd)) s.end('+OK bye\r\n');
      else if (/^CAPA/.test(cmd)) s.write('-ERR no\r\n');
      else s.write('+OK\r\n');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push({ close: () => new Promise<void>((r) => server.close(() => r())) } as HostilePop3);
  // Its deadline is about 12 s: searching the line anew at each byte took ~45 s for this one.
  const deps = counting({ timeoutMs: 10_000, minBytesPerSecond: 64 * 1024 });
  const started = Date.now();
  const r = await fetchAccount(account('hostile/bytewise', (server.address() as net.AddressInfo).port), deps);
  const took = Date.now() - started;
  assert.equal([r.error, r.fetched, r.deleted], [undefined, 1, 1]);
  assert.equal(deps.got[0], `Subject: drip\r\n\r\n${'d'.repeat(LEN)}\r\n`);
  console.log(`    60k one-byte packets: fetched in ${took} ms`);
});

test('escape codes in a server\'s reply never reach the error text (terminal, log)', async () => {
  const h = await hostile({ hostility: 'escape-err' });
  const r = await fetchAccount(account('hostile/esc', h.port), counting());
  assert.ok(r.authFailed);
  assert.match(r.error ?? '', /refused .*-ERR .*bad.* password/);
  assert.not.match(r.error ?? '', /[\x00-\x1f\x7f-\x9f]/);
});

test('a server echoing the password in its -ERR to PASS: the account\'s error says [redacted], never the password', async () => {
  const h = await hostile({ hostility: 'echo-err' });
  const pw = 'S3cret-pw!';
  const r = await fetchAccount(account('hostile/echo', h.port, { password: pw }), counting());
  assert.ok(r.authFailed);
  assert.match(r.error ?? '', /refused .*-ERR \[AUTH\] you sent \[redacted\] = \[redacted\], wrong/);
  assert.not.ok((r.error ?? '').includes(pw) || (r.error ?? '').includes(Buffer.from(`\0u\0${pw}`).toString('base64')), r.error);
});

test.run();
