// The fetch scheduler against a real Dovecot (POP3S with the test CA): a certificate that does
// not verify, or a refused password, marks the account failing and pauses automatic fetches —
// link events and schedules do not hammer the server — while `tidemail fetch` still tries, and a
// corrected account starts afresh. Connections are counted by a loopback relay in front of Dovecot.
// And the daemon's stop cuts a fetch a server drip-feeds (test/helpers/hostile-pop3.ts).

import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { FetchSpec, RouteProfile } from '../../src/routes/profile.js';
import { FetchScheduler } from '../../src/fetch/scheduler.js';
import { UidlStore } from '../../src/fetch/uidl-store.js';
import { testCerts } from '../helpers/certs.js';
import { makeSite, startDaemon } from '../helpers/daemon.js';
import { startHostilePop3 } from '../helpers/hostile-pop3.js';
import { waitFor } from '../helpers/ports.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { cleanupTmp, tmpDir, writeSecret } from '../helpers/tmp.js';

let dc: Dovecot;
let relay: { port: number; connections: () => number; close: () => void };
let uidls: UidlStore;

/** Forwards every connection to Dovecot's POP3S port and counts them. */
async function countingRelay(target: number): Promise<typeof relay> {
  let n = 0;
  const server = net.createServer((c) => {
    n++;
    const up = net.connect(target, '127.0.0.1');
    c.pipe(up).pipe(c);
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, connections: () => n, close: () => server.close() };
}

test.before(async () => {
  if (!haveDovecot()) throw new Error('dovecot is not installed (apt-get install dovecot-pop3d; .ci/run does this)');
  dc = await startDovecot({ users: { me: 'secret' }, tls: true });
  relay = await countingRelay(dc.tlsPort);
  uidls = await UidlStore.open(tmpDir('tidemail-sched-'));
});
test.after(async () => {
  relay?.close();
  await uidls?.close();
  await dc?.stop();
  cleanupTmp();
});

function account(over: Partial<FetchSpec>): FetchSpec {
  return {
    name: 'isp/me', route: 'isp', host: '127.0.0.1', port: relay.port, tls: 'implicit', user: 'me', password: 'secret', passwordFile: '',
    auth: 'auto', keep: false, deliverTo: ['me'], recipientsFrom: [], recipientsDomains: [], oversize: 'skip', intervalMs: 3_600_000,
    ...over,
  };
}
const routeWith = (a: FetchSpec) => [{ name: 'isp', fetch: [a] } as unknown as RouteProfile];

for (const [what, broken, flag] of [
  ['an untrusted certificate', {}, 'tlsFailed'],
  ['a wrong password', { caFile: testCerts().caFile, password: 'wrong' }, 'authFailed'],
] as const) {
  test(`${what}: account failing, automatic fetches paused, manual ones still try, a fix starts afresh`, async () => {
    dc.deliver('me', `Subject: ${flag}\r\n\r\nx\r\n`);
    const got: string[] = [];
    const sched = new FetchScheduler(uidls, () => true, async (_a, body) => {
      let s = '';
      for await (const c of body) s += c.toString();
      got.push(s);
    });
    try {
      sched.setRoutes(routeWith(account(broken)));
      const start = relay.connections();
      const [first] = await sched.fetchRoute('isp');
      assert.ok(first?.[flag], JSON.stringify(first));
      assert.equal(relay.connections() - start, 1);
      const [st] = sched.states();
      assert.match(st?.last?.error ?? '', flag === 'tlsFailed' ? /TLS to POP3 server .* failed/ : /refused \(wrong user name or password\?\)/);
      // Links flapping and schedules firing: no new connection.
      for (let i = 0; i < 5; i++) await sched.fetchRoute('isp');
      assert.equal(relay.connections() - start, 1, 'automatic fetches retried a failing account');
      // `tidemail fetch` is someone at the keyboard: it tries again.
      const manual = await sched.fetchNow('isp/me');
      assert.ok(manual['isp/me']?.[flag]);
      assert.equal(relay.connections() - start, 2);
      // The account fixed in its route file (reload): fetched at the next automatic run.
      sched.setRoutes(routeWith(account({ caFile: testCerts().caFile })));
      const [fixed] = await sched.fetchRoute('isp');
      assert.equal([fixed?.fetched, fixed?.error], [1, undefined]);
      assert.equal(got.length, 1);
      assert.match(got[0]!, new RegExp(`Subject: ${flag}`));
      assert.equal(dc.mailbox('me'), []);
    } finally {
      sched.stop();
      await sched.idle();
    }
  });
}

test('an offline route is never fetched', async () => {
  dc.deliver('me', 'Subject: offline\r\n\r\nx\r\n');
  const sched = new FetchScheduler(uidls, () => false, async () => undefined);
  try {
    sched.setRoutes(routeWith(account({ caFile: testCerts().caFile })));
    const start = relay.connections();
    const [r] = await sched.fetchRoute('isp');
    assert.match(r?.error ?? '', /route isp is offline; not fetched/);
    assert.match((await sched.fetchNow('isp/me'))['isp/me']?.error ?? '', /offline/);
    assert.equal(relay.connections(), start);
    assert.equal(dc.mailbox('me').length, 1);
  } finally {
    sched.stop();
  }
});

test('the daemon stopped while a POP3 server drip-feeds a RETR: the fetch is cut, the daemon exits at once', async () => {
  // The RETR's own deadline is 30 s + its 65756-byte cap at 1 KiB/s: 94 s, which stop waited out.
  const h = await startHostilePop3({ hostility: 'drip-retr', dripMs: 200 });
  try {
    const site = await makeSite();
    const pw = writeSecret(path.join(site.dir, 'secrets', 'pop'), 'p\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${h.port}"\ntls = "none"\nuser = "u"\nauth = "user"\npassword_file = "${pw}"\ndeliver_to = "alice"\nkeep = false\n`);
    const d = await startDaemon(site);
    await waitFor('the daemon to send RETR 1', () => h.commands.includes('RETR 1'), 15_000);
    const started = Date.now();
    const code = await d.stop();
    const took = Date.now() - started;
    assert.equal(code, 0, d.logs());
    assert.ok(took < 10_000, `stop took ${took} ms`);
    assert.not.ok(h.commands.includes('DELE 1') || h.commands.includes('QUIT'), h.commands.join(', '));
  } finally {
    await h.close();
  }
});

test.run();
