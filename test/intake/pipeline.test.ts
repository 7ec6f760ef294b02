// The intake contract, driven through the real daemon for every source that queues mail: SMTP,
// the maildrop pickup (sendmail, sendmail -bs; also by `runq` with no daemon), POP3 fetching and
// our own bounces. Each message carries an
// Authentication-Results that claims our host name (forged) and one from elsewhere; whatever
// brought it, the copy that leaves has our one trace line on top, the forged field gone, the
// foreign one byte for byte, the archive copy, and — for our own users' mail — a DKIM signature
// over the message exactly as it left.

import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { haveDovecot, startDovecot, type Dovecot } from '../helpers/dovecot.js';
import { smarthostRoute, startSmarthost, type ReceivedMessage, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';
import fs from 'node:fs';

const keep = stopAfterEach(test);
test.after(() => cleanupTmp());

const FORGED = 'Authentication-Results: tidemail.test;\r\n\tdkim=pass header.d=bank.example';
const FOREIGN = 'Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=alice@tidemail.test';
const message = (source: string) =>
  `${FORGED}\r\n${FOREIGN}\r\nFrom: Alice <alice@tidemail.test>\r\nTo: bob@remote.example\r\nSubject: via ${source}\r\n` +
  `Date: Wed, 02 Dec 2026 22:00:00 +0000\r\nMessage-ID: <${source}@tidemail.test>\r\n\r\nHello from ${source}.\r\n`;

/** Our trace line for each source, as the first header after any signature and added fields. */
const TRACE: Record<string, RegExp> = {
  smtp: /^Received: from client\.test \(\[127\.0\.0\.1\]\)\r\n\tby tidemail\.test \(tidemail\) with ESMTP id /,
  sendmail: /^Received: by tidemail\.test \(tidemail pickup, from userid \d+\)\r\n/,
  'sendmail-bs': /^Received: by tidemail\.test \(tidemail pickup, from userid \d+\)\r\n/,
  fetch: /^Received: from 127\.0\.0\.1 by tidemail\.test \(tidemail\) with POP3 id /,
  runq: /^Received: by tidemail\.test \(tidemail pickup, from userid \d+\)\r\n/,
};

async function site(sh: Smarthost, dovecot?: Dovecot) {
  const s = await makeSite('[local]\narchive = "archive@remote.example"');
  let route = smarthostRoute(sh.port);
  if (dovecot) {
    writeSecret(path.join(s.dir, 'secrets', 'pop'), 'secret\n');
    route += `\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${s.dir}/secrets/pop"\ndeliver_to = "bob@remote.example"\n`;
  }
  s.route('isp', route);
  const k = await runCli(['dkim', 'keygen', 'tidemail.test', '--config', s.configPath]);
  assert.is(k.code, 0, k.stderr);
  const line = /_domainkey\.\S+ IN TXT (.*)$/m.exec(k.stdout)!;
  const record = [...line[1]!.matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
  fs.appendFileSync(s.configPath, `\n${k.stdout.slice(k.stdout.indexOf('[checks]'))}`);
  return { s, record };
}

async function verifies(raw: Buffer, record: string): Promise<string> {
  const { dkimVerify } = await import('mailauth/lib/dkim/verify.js');
  const res = await dkimVerify(raw, {
    resolver: async (n: string, type: string) => {
      if (type === 'TXT' && n === 'tidemail._domainkey.tidemail.test') return [[record]];
      throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
    },
  });
  return res.results[0]?.status.result ?? 'none';
}

/** The contract every source keeps. */
async function assertContract(m: ReceivedMessage, source: string, signed: boolean, record: string): Promise<void> {
  const raw = m.raw.toString();
  const why = `${source}:\n${raw}`;
  assert.ok(m.to.includes('archive@remote.example'), `${source}: no archive copy (${m.to.join(', ')})`);
  assert.ok(!raw.includes('tidemail.test;\r\n\tdkim=pass header.d=bank.example'), `${source}: the forged Authentication-Results is still there\n${raw}`);
  assert.ok(raw.includes(`${FOREIGN}\r\n`), `${source}: the foreign Authentication-Results changed\n${raw}`);
  const ours = raw.match(/^Received: [^\r]*(\r\n[ \t][^\r]*)*\r\n(?=[^ \t])/gm)!.filter((r) => /by tidemail\.test/.test(r));
  assert.is(ours.length, source === 'sendmail-bs' ? 2 : 1, why); // -bs: the session's own line, then the pickup's
  const afterSig = raw.replace(/^DKIM-Signature: [^\r]*(\r\n[ \t][^\r]*)*\r\n/, '');
  assert.match(afterSig, TRACE[source]!, why);
  if (signed) {
    assert.match(raw, /^DKIM-Signature: [^]*\bd=tidemail\.test;/, why);
    assert.is(await verifies(m.raw, record), 'pass', why);
  } else {
    assert.not.match(raw, /^DKIM-Signature:/m, `${source}: fetched mail is not ours to sign\n${raw}`);
  }
}

test('SMTP, sendmail and sendmail -bs: one trace line, forged A-R removed, archive copy, signed last', async () => {
  const sh = keep(await startSmarthost());
  const { s, record } = await site(sh);
  keep(await startDaemon(s));
  assert.match(await sendMessage(s.port, 'alice@tidemail.test', ['bob@remote.example'], message('smtp')), /^250/);
  const r = await runCli(['-C', s.configPath, '-f', 'alice@tidemail.test', 'bob@remote.example'], { argv0: 'sendmail', input: message('sendmail').replace(/\r\n/g, '\n') });
  assert.is(r.code, 0, r.stderr);
  const bs = `EHLO client.test\r\nMAIL FROM:<alice@tidemail.test>\r\nRCPT TO:<bob@remote.example>\r\nDATA\r\n${message('sendmail-bs')}.\r\nQUIT\r\n`;
  const b = await runCli(['-C', s.configPath, '-bs'], { argv0: 'sendmail', input: bs });
  assert.is(b.code, 0, b.stderr);
  const got = await sh.waitForMessages(3);
  for (const source of ['smtp', 'sendmail', 'sendmail-bs']) {
    const m = got.find((x) => x.raw.toString().includes(`Subject: via ${source}\r\n`));
    assert.ok(m, `nothing arrived via ${source}`);
    await assertContract(m, source, true, record);
  }
});

(haveDovecot() ? test : test.skip)('POP3-fetched mail: forged Authentication-Results naming us are removed too', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    dovecot.deliver('me', message('fetch'));
    const sh = keep(await startSmarthost());
    const { s, record } = await site(sh, dovecot);
    keep(await startDaemon(s));
    const [m] = await sh.waitForMessages(1, 15_000);
    await assertContract(m!, 'fetch', false, record);
  } finally {
    await dovecot.stop();
  }
});

test('runq with no daemon: cron\'s mail in the maildrop goes through the same pipeline (signed, archived, forged A-R removed)', async () => {
  const sh = keep(await startSmarthost());
  const { s, record } = await site(sh);
  const r = await runCli(['-C', s.configPath, '-f', 'alice@tidemail.test', 'bob@remote.example'], { argv0: 'sendmail', input: message('runq').replace(/\r\n/g, '\n') });
  assert.is(r.code, 0, r.stderr);
  const run = await runCli(['--config', s.configPath], { argv0: 'runq' });
  assert.is(run.code, 0, run.stderr);
  const [m] = await sh.waitForMessages(1);
  await assertContract(m!, 'runq', true, record); // unsigned and without the archive copy before
});

(process.getuid?.() === 0 ? test : test.skip)('runq as an ordinary user with no daemon: told about the queue it may not open, not about the DKIM key it may not read', async () => {
  const sh = keep(await startSmarthost());
  const { s } = await site(sh);
  const r = await runCli(['-C', s.configPath, 'bob@remote.example'], { argv0: 'sendmail', input: 'Subject: x\n\nx\n' });
  assert.is(r.code, 0, r.stderr);
  const run = await runCli(['--config', s.configPath], { argv0: 'runq', uid: 54321, gid: 54321 }); // no passwd entry
  assert.ok(run.code === 73 || run.code === 77, `${run.code}: ${run.stderr}`);
  assert.match(run.stderr, new RegExp(s.stateDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  assert.not.match(run.stderr, /dkim|\.key\b|\n\s+at /i);
});

test('a bounce: our DSN enters through the pipeline — one trace line with its own id, signed, no archive copy, never refused', async () => {
  const sh = keep(await startSmarthost({ rcptReply: (a) => (a === 'gone@remote.example' ? '550 5.1.1 no such user' : null) }));
  const { s, record } = await site(sh);
  const d = keep(await startDaemon(s));
  assert.match(await sendMessage(s.port, 'author@remote.example', ['gone@remote.example'], message('bounce')), /^250/);
  const [, id] = await d.waitForLog(/([0-9A-F]{16}): bounce queued/);
  const dsn = await waitForDsn(sh);
  const raw = dsn.raw.toString();
  assert.equal([dsn.from, dsn.to], ['', ['author@remote.example']], 'the archive gets no copy of a bounce');
  // In the DSN's own header section (the returned original's headers follow in the body).
  const head = raw.slice(0, raw.indexOf('\r\n\r\n') + 2);
  const ours = head.match(/^Received: [^\r]*(\r\n[ \t][^\r]*)*\r\n(?=[^ \t])/gm) ?? [];
  assert.is(ours.length, 1, raw);
  assert.match(ours[0]!, new RegExp(`^Received: by tidemail\\.test \\(tidemail, delivery status notification\\)\r\n\tid ${id};`));
  assert.match(raw, /^DKIM-Signature: [^]*\bd=tidemail\.test;/);
  assert.is(await verifies(dsn.raw, record), 'pass', raw);
  assert.match(raw, /From: Mail Delivery System <MAILER-DAEMON@tidemail\.test>/);
  assert.match(d.logs(), new RegExp(`${id}: accepted from=<> via=bounce`));
});

async function waitForDsn(sh: Smarthost): Promise<ReceivedMessage> {
  for (let n = 1; ; n++) {
    const got = await sh.waitForMessages(n, 15_000);
    const dsn = got.find((m) => m.from === '');
    if (dsn) return dsn;
  }
}

test.run();
