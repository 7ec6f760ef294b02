// The milter check as the daemon builds it, against a real OpenDKIM in signing mode (the check
// adds a DKIM-Signature that verifies over the message as stored) and a scripted milter for what
// OpenDKIM never does (refusals, header edits, counting connections).

import fs from 'node:fs';
import net from 'node:net';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import { pkt, raw } from '../helpers/milter-packets.js';
import * as assert from 'uvu/assert';
import { runChecks, type Check, type CheckContext, type HeaderField, type Phase, type Verdict } from '../../src/checks/check.js';
import { createCheck } from '../../src/checks/milter-check.js';
import { ConfigError } from '../../src/errors.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { RawSmtp, sendMessage } from '../helpers/smtp-client.js';
import { startOpendkim, verifySimpleDkim, dkimTags, type Opendkim } from '../helpers/opendkim.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { cleanupTmp } from '../helpers/tmp.js';

const test = suite('milter-check');
let dkim: Opendkim;
const checks: Check[] = [];
test.before(async () => {
  dkim = await startOpendkim('example.org', 'test');
});
test.after(async () => {
  for (const c of checks) await c.close?.();
  dkim?.stop();
  cleanupTmp();
});

async function milter(address: string, extra = ''): Promise<Check> {
  const c = await buildCheck(createCheck, 'milter', `[checks.milter]\naddress = "${address}"\n${extra}\n`);
  checks.push(c);
  return c;
}

/** Our Received: on top, a folded Subject, CRLF line ends: what the session hands to checks. */
function message(from = 'Alice <alice@example.org>', body = 'Hello Bob,\r\n\r\nsigned on the way out.\r\n'): Buffer {
  return Buffer.from(
    [
      'Received: from client.example.org (localhost [127.0.0.1])',
      '\tby tidemail.test with ESMTPA id 4F2A1B2C3D4E5F60; Wed, 25 Nov 2026 21:30:00 +0000',
      `From: ${from}`,
      'To: bob@example.net',
      'Subject: a subject long enough',
      '\tto be folded over two lines',
      'Date: Wed, 25 Nov 2026 21:29:58 +0000',
      'Message-ID: <m1@example.org>',
      '',
      body,
    ].join('\r\n'),
  );
}

/** Runs one SMTP session through the check at `phases`: one message per entry of `messages`. */
async function session(check: Check, phases: Phase[], messages: Buffer[], over: Partial<CheckContext> = {}): Promise<Verdict[]> {
  const base = context('connect', { clientAddress: '127.0.0.1', clientHostname: 'localhost', helo: 'client.example.org', ...over });
  const results: Verdict[] = [];
  const at = async (phase: Phase, extra: Partial<CheckContext>) => {
    if (!phases.includes(phase)) return;
    const v = await check.run(phase, { ...base, phase, ...extra });
    if (phase === 'data') results.push(v);
    else assert.is(v.action, 'next', `${phase}: ${JSON.stringify(v)}`);
  };
  await at('connect', {});
  await at('helo', {});
  for (const [i, msg] of messages.entries()) {
    const m = { messages: i, queueId: `Q${i}`, sender: 'alice@example.org' };
    await at('mail', m);
    await at('rcpt', { ...m, recipient: 'bob@example.net', recipients: [] });
    await at('data', {
      ...m, recipients: ['bob@example.net'], size: msg.length,
      body: () => Readable.from((function* () {
        for (let i = 0; i < msg.length; i += 1000) yield msg.subarray(i, i + 1000); // headers split across chunks
      })()),
    });
  }
  check.sessionEnded?.(base.sessionId);
  return results;
}

const field = (h: HeaderField) => `${h.name}: ${h.value}`;

test('OpenDKIM through createCheck: the DKIM-Signature it adds verifies over the stored message', async () => {
  const check = await milter(dkim.address, 'timeout = "5s"');
  const msg = message();
  const [v] = await session(check, ['connect', 'helo', 'mail', 'rcpt', 'data'], [msg]);
  assert.is(v!.action, 'next', JSON.stringify(v));
  const added = v!.action === 'next' ? v!.addHeaders ?? [] : [];
  const sig = added.find((h) => h.name === 'DKIM-Signature');
  assert.ok(sig, `${JSON.stringify(v)}\n${dkim.log()}`);
  // OpenDKIM folds with bare LF; the field we hand back has CRLF folds only.
  assert.not.match(sig.value, /(^|[^\r])\n/);
  const tags = dkimTags(sig.value);
  assert.is(tags.get('d'), 'example.org');
  assert.is(tags.get('s'), 'test');
  assert.ok((tags.get('h') ?? '').toLowerCase().split(':').includes('subject'), tags.get('h'));
  // Verified over the message as stored (signature on top): proves the header fields went over
  // byte for byte, folds included, and the body without the header section.
  assert.is(verifySimpleDkim(field(sig), msg, dkim.publicKey), null);
  // …and the verifier is not a rubber stamp.
  assert.ok(verifySimpleDkim(field(sig), Buffer.from(msg.toString().replace('two lines', 'two  lines')), dkim.publicKey));
  assert.match(String(verifySimpleDkim(field(sig), Buffer.from(msg.toString() + 'x\r\n'), dkim.publicKey)), /body hash/);
});

test('listed at data only: CONNECT…RCPT are caught up; two messages on one connection; foreign From unsigned', async () => {
  const check = await milter(dkim.address);
  const [v1, v2] = await session(check, ['data'], [message(), message('Mallory <m@example.com>')]);
  const sig = v1!.action === 'next' ? v1!.addHeaders?.find((h) => h.name === 'DKIM-Signature') : undefined;
  assert.ok(sig, JSON.stringify(v1));
  assert.is(verifySimpleDkim(field(sig), message(), dkim.publicKey), null);
  assert.equal(v2, { action: 'next' });
});

test('an authenticated client from elsewhere is signed ({auth_type}); an unauthenticated one is not', async () => {
  const check = await milter(dkim.address);
  const outside = { clientAddress: '198.51.100.7', clientHostname: 'dsl.example.net' };
  const [signed] = await session(check, ['mail', 'data'], [message()], { ...outside, authUser: 'alice' });
  assert.ok(signed!.action === 'next' && signed!.addHeaders?.some((h) => h.name === 'DKIM-Signature'), JSON.stringify(signed));
  const [unsigned] = await session(check, ['mail', 'data'], [message()], outside);
  assert.equal(unsigned, { action: 'next' });
});

// --- a scripted milter for the replies OpenDKIM never sends -------------------------------------

interface Packet {
  cmd: string;
  data: Buffer;
}


/** Answers OPTNEG (all steps, all replies), then each command with its script (default CONTINUE). */
async function scriptedMilter(script: (p: Packet) => Buffer[] | undefined) {
  const connections: Packet[][] = [];
  const closed: boolean[] = [];
  const server = net.createServer((sock) => {
    const seen: Packet[] = [];
    const n = connections.push(seen) - 1;
    closed[n] = false;
    sock.on('close', () => (closed[n] = true));
    let buf = Buffer.alloc(0);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
        const len = buf.readUInt32BE(0);
        const p = { cmd: String.fromCharCode(buf[4]!), data: Buffer.from(buf.subarray(5, 4 + len)) };
        buf = buf.subarray(4 + len);
        seen.push(p);
        if (p.cmd === 'O') sock.write(pkt('O', 6, 0x33, 0));
        else if (p.cmd === 'D' || p.cmd === 'A' || p.cmd === 'Q') continue;
        else for (const r of script(p) ?? [pkt('c')]) sock.write(r);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`, connections, closed, close: () => server.close() };
}

const text = (p: Packet) => p.data.toString('utf8').split('\0').slice(0, -1);

test('one connection per session: every step in order, headers as sent (folds as LF), the body after them', async () => {
  const m = await scriptedMilter(() => undefined);
  const check = await milter(m.address);
  const msg = message();
  await session(check, ['connect', 'helo', 'mail', 'rcpt', 'data'], [msg, msg]);
  await waitFor('connection closed', () => m.closed[0], 2000, 10);
  assert.is(m.connections.length, 1);
  const seen = m.connections[0]!;
  const cmds = seen.filter((p) => p.cmd !== 'D').map((p) => p.cmd).join('');
  // OPTNEG, CONNECT, HELO, then per message MAIL RCPT DATA HEADER×6 EOH BODY… EOM; QUIT at the end.
  assert.match(cmds, /^OCH(MRTL{6}NB+E){2}Q$/);
  const headers = seen.filter((p) => p.cmd === 'L').slice(0, 6).map(text);
  assert.equal(headers[0], ['Received', 'from client.example.org (localhost [127.0.0.1])\n\tby tidemail.test with ESMTPA id 4F2A1B2C3D4E5F60; Wed, 25 Nov 2026 21:30:00 +0000']);
  assert.equal(headers[3], ['Subject', 'a subject long enough\n\tto be folded over two lines']);
  const bodyBytes = Buffer.concat(seen.slice(0, seen.findIndex((p) => p.cmd === 'E')).filter((p) => p.cmd === 'B').map((p) => p.data));
  assert.equal(bodyBytes.toString(), msg.toString().slice(msg.indexOf('\r\n\r\n') + 4));
  const connect = seen.find((p) => p.cmd === 'C')!;
  assert.is(connect.data.toString().split('\0')[0], 'localhost');
  assert.ok(connect.data.includes(Buffer.from('127.0.0.1\0')));
  assert.equal(text(seen.find((p) => p.cmd === 'M')!), ['<alice@example.org>']);
  assert.equal(text(seen.find((p) => p.cmd === 'R')!), ['<bob@example.net>']);
  m.close();
});

test('a recipient refusal, a refusal at end of message; added headers go on top, header changes are passed on, quarantine is logged', async () => {
  const m = await scriptedMilter((p) => {
    if (p.cmd === 'R' && text(p)[0] === '<spamtrap@example.net>') return [pkt('y', '550 5.1.1 no such user')];
    if (p.cmd === 'E') {
      return [pkt('h', 'X-Tail', 'appended'), pkt('i', 0, 'X-Top', 'inserted'), pkt('m', 1, 'Subject', '[SPAM] hi'),
        pkt('h', 'X-Folded', 'one\n\ttwo'), pkt('q', 'looks odd'), pkt('c')];
    }
    return undefined;
  });
  const check = await milter(m.address);
  const base = context('rcpt', { sender: 'alice@example.org', recipient: 'spamtrap@example.net', messages: 0 });
  assert.equal(await check.run('rcpt', base), { action: 'reject', code: 550, enhanced: '5.1.1', text: 'no such user' });
  assert.equal(await check.run('rcpt', { ...base, recipient: 'bob@example.net' }), { action: 'next' });
  const msg = message();
  const write = process.stderr.write.bind(process.stderr);
  let logged = '';
  process.stderr.write = ((c: string | Uint8Array) => ((logged += String(c)), true)) as typeof process.stderr.write;
  let v: Verdict;
  try {
    v = await check.run('data', { ...base, phase: 'data', recipient: undefined, recipients: ['bob@example.net'], queueId: 'Q7', body: () => Readable.from([msg]) });
  } finally {
    process.stderr.write = write;
  }
  assert.equal(v, {
    action: 'next',
    addHeaders: [{ name: 'X-Top', value: 'inserted' }, { name: 'X-Tail', value: 'appended' }, { name: 'X-Folded', value: 'one\r\n\ttwo' }],
    changeHeaders: [{ name: 'Subject', index: 1, value: '[SPAM] hi' }],
  });
  assert.match(logged, /Q7: milter asked to quarantine the message; not applied .* reason="looks odd"/);
  check.sessionEnded?.(base.sessionId);
  m.close();

  const m2 = await scriptedMilter((p) => (p.cmd === 'E' ? [pkt('y', '554 5.7.1 virus found')] : p.cmd === 'B' ? [pkt('c')] : undefined));
  const check2 = await milter(m2.address);
  const r = await check2.run('data', context('data', { recipients: ['bob@example.net'], body: () => Readable.from([msg]) }));
  assert.equal(r, { action: 'reject', code: 554, enhanced: '5.7.1', text: 'virus found' });
  m2.close();
});

test('a refused connection stays refused for the whole session; a new session asks again', async () => {
  let n = 0;
  const m = await scriptedMilter((p) => (p.cmd === 'C' && n++ === 0 ? [pkt('y', '554 5.7.1 not from you')] : undefined));
  const check = await milter(m.address);
  const ctx = context('connect');
  const refusal = { action: 'reject', code: 554, enhanced: '5.7.1', text: 'not from you' };
  assert.equal(await check.run('connect', ctx), refusal);
  assert.equal(await check.run('mail', { ...ctx, phase: 'mail' }), refusal);
  check.sessionEnded?.(ctx.sessionId);
  assert.equal(await check.run('connect', context('connect')), { action: 'next' });
  m.close();
});

test('milter down: 451 naming the check, or on without it with on_failure = "accept"', async () => {
  const port = await freePort();
  const strict = await milter(`inet:${port}@127.0.0.1`);
  const v = await runChecks([strict], 'mail', context('mail'));
  assert.ok(v.action === 'tempfail' && v.code === 451 && /check milter/.test(v.text), JSON.stringify(v));
  const lax = await milter(`inet:${port}@127.0.0.1`, 'on_failure = "accept"');
  const ctx = context('mail');
  assert.equal(await lax.run('mail', ctx), { action: 'next' });
  assert.equal(await lax.run('data', { ...ctx, phase: 'data', body: () => Readable.from([message()]) }), { action: 'next' });
  // A silent milter times out the same way.
  const silent = net.createServer((s) => s.resume());
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const slow = await milter(`127.0.0.1:${(silent.address() as net.AddressInfo).port}`, 'timeout = "200ms"');
  const err = await slow.run('connect', context('connect')).then(() => null, (e: Error) => e);
  assert.match(String(err?.message), /no reply within 200 ms/);
  silent.close();
});

test('bad options are config errors with file:line', async () => {
  const bad = async (table: string, re: RegExp) => {
    const toml = `[checks.milter]\n${table}\n`;
    const err = await Promise.resolve().then(() => buildCheck(createCheck, 'milter', toml)).then(() => null, (e: Error) => e);
    assert.instance(err, ConfigError, toml);
    assert.match(err!.message, re);
  };
  await bad('timeout = "5s"', /tidemail\.toml:1(:\d+)?: 'checks\.milter\.address' is missing/);
  await bad('address = "opendkim"', /:2(:\d+)?: .*not a milter address/);
  await bad('address = "inet:8891@localhost"\non_failure = "reject"', /:3(:\d+)?: .*"reject", which is not one of "tempfail", "accept"/);
});

test('end to end: a milter\'s header changes, deletions and body replacement reach the next hop; nothing else moves', async () => {
  const m = await scriptedMilter((p) => {
    if (p.cmd !== 'E') return undefined;
    return [pkt('m', 1, 'Subject', ' [SPAM] was: hello'), pkt('m', 2, 'X-Drop', ''), pkt('m', 1, 'X-New', 'added by chgheader'),
      raw('b', 'Replaced body line 1.\r\nLine 2.\r\n'), raw('b', 'Line 3.\r\n'), pkt('a')];
  });
  const sh = await startSmarthost();
  const site = await makeSite(`[checks]\ndata = ["milter"]\n[checks.milter]\naddress = "${m.address}"\n`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const body = 'From: <alice@example.org>\r\nX-Drop: first stays\r\nSubject: hello\r\nX-Drop: second\r\n\tgoes, fold and all\r\n' +
      'Date: Wed, 25 Nov 2026 22:00:00 +0000\r\n\r\nThe original body.\r\n';
    assert.match(await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], body), /^250/);
    const [got] = await sh.waitForMessages(1);
    const raw = got!.raw.toString('latin1');
    const [head, rest] = [raw.slice(0, raw.indexOf('\r\n\r\n') + 2), raw.slice(raw.indexOf('\r\n\r\n') + 4)];
    assert.match(head, /^Received: /);
    assert.ok(head.includes('\r\nFrom: <alice@example.org>\r\nX-Drop: first stays\r\nSubject: [SPAM] was: hello\r\nDate: '), head);
    assert.not.match(head, /second|fold and all/);
    assert.match(head, /\r\nX-New: added by chgheader\r\n$/);
    assert.is(rest, 'Replaced body line 1.\r\nLine 2.\r\nLine 3.\r\n');
    assert.match(d.logs(), /message edited by a check headers=3 body=replaced/);
  } finally {
    await d.stop();
    await sh.close();
    m.close();
  }
});

test('end to end: dkim-sign listed before a milter that edits still signs the edited message (signing is last)', async () => {
  const m = await scriptedMilter((p) => {
    if (p.cmd !== 'E') return undefined;
    return [pkt('m', 1, 'Subject', ' [tagged] hello'), raw('b', 'The milter\'s body.\r\n'), pkt('a')];
  });
  const sh = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const k = await runCli(['dkim', 'keygen', 'example.org', '--config', site.configPath]);
  assert.is(k.code, 0, k.stderr);
  const record = [.../_domainkey\.\S+ IN TXT (.*)$/m.exec(k.stdout)![1]!.matchAll(/"([^"]*)"/g)].map((x) => x[1]).join('');
  // keygen's [checks] lines, with the milter after the signer: the order a user may well write.
  const printed = k.stdout.slice(k.stdout.indexOf('[checks]')).replace(/^data = \[[^\]]*\]/m, 'data = ["dkim-sign", "milter"]');
  assert.match(printed, /data = \["dkim-sign", "milter"\]/);
  fs.appendFileSync(site.configPath, `\n${printed}\n[checks.milter]\naddress = "${m.address}"\n`);
  const d = await startDaemon(site);
  try {
    const body = 'From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: hello\r\nDate: Wed, 25 Nov 2026 22:00:00 +0000\r\n\r\nThe original body.\r\n';
    assert.match(await sendMessage(site.port, 'alice@example.org', ['bob@remote.example'], body), /^250/);
    const [got] = await sh.waitForMessages(1);
    const text = got!.raw.toString();
    assert.match(text, /^DKIM-Signature: /);
    assert.match(text, /\r\nSubject: \[tagged\] hello\r\n/);
    assert.match(text, /\r\n\r\nThe milter's body\.\r\n$/);
    const { dkimVerify } = await import('mailauth/lib/dkim/verify.js');
    const res = await dkimVerify(got!.raw, {
      resolver: async (n: string, type: string) => {
        if (type === 'TXT' && n === 'tidemail._domainkey.example.org') return [[record]];
        throw Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' });
      },
    });
    assert.is(res.results[0]?.status.result, 'pass', `${JSON.stringify(res.results[0]?.status)}\n${text}`);
  } finally {
    await d.stop();
    await sh.close();
    m.close();
  }
});

test('end to end: the daemon relays a message with OpenDKIM\'s signature on top, and it verifies there', async () => {
  const sh = await startSmarthost();
  const site = await makeSite(`[checks]\nmail = ["milter"]\nrcpt = ["milter"]\ndata = ["milter"]\n[checks.milter]\naddress = "${dkim.address}"\n`);
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  try {
    const body = 'From: Alice <alice@example.org>\r\nTo: bob@remote.example\r\nSubject: signed by\r\n\tthe milter\r\n' +
      'Date: Wed, 25 Nov 2026 22:00:00 +0000\r\nMessage-ID: <e2e-milter@example.org>\r\n\r\nHello Bob.\r\n';
    // Two messages on one SMTP connection, so on one milter connection.
    const c = await RawSmtp.connect(site.port);
    await c.hello('client.example.org');
    for (const i of [1, 2]) {
      assert.match(await c.cmd('MAIL FROM:<alice@example.org>'), /^250/);
      assert.match(await c.cmd('RCPT TO:<bob@remote.example>'), /^250/);
      assert.match(await c.cmd('DATA'), /^354/);
      c.write(body.replace('Hello Bob.', `Hello Bob, #${i}.`) + '.\r\n');
      assert.match(await c.reply(), /^250/);
    }
    await c.cmd('QUIT');
    c.close();
    const got = await sh.waitForMessages(2);
    for (const m of got) {
      const raw = m.raw.toString('latin1');
      const sig = /^DKIM-Signature:(?:[^\r\n]*\r\n[ \t])*[^\r\n]*\r\n/.exec(raw);
      assert.ok(sig, `no DKIM-Signature on top:\n${raw.slice(0, 1500)}`);
      const rest = Buffer.from(raw.slice(sig[0].length), 'latin1');
      assert.match(rest.toString(), /^Received: /);
      assert.is(verifySimpleDkim(sig[0].slice(0, -2), rest, dkim.publicKey), null);
    }
    // A foreign From: domain is relayed unsigned.
    assert.match(await sendMessage(site.port, 'mallory@example.com', ['bob@remote.example'], body.replace('alice@example.org', 'mallory@example.com')), /^250/);
    const [, , foreign] = await sh.waitForMessages(3);
    assert.not.match(foreign!.raw.toString(), /DKIM-Signature/);
  } finally {
    await d.stop();
    await sh.close();
  }
});

test.run();
