// `sendmail` as local programs call it: the real binary under its sendmail name, a real daemon
// (or none), a real smarthost. What arrives at the smarthost is the behaviour under test.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { BIN, REPO, makeSite, runCli, startDaemon, type CliResult, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type ReceivedMessage, type Smarthost } from '../helpers/smarthost.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';
import { RawSmtp } from '../helpers/smtp-client.js';
import { readMaildropEnvelope } from '../../src/queue/maildrop.js';

const USER = os.userInfo().username;

/** One daemon + smarthost shared by the tests that only look at what gets delivered. */
let shared: { sh: Smarthost; site: TestSite; d: RunningDaemon } | null = null;
const extra: { stop(): Promise<unknown> }[] = [];

test.before(async () => {
  const sh = await startSmarthost();
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const d = await startDaemon(site);
  shared = { sh, site, d };
});
test.after.each(async () => {
  for (const r of extra.splice(0).reverse()) await r.stop();
});
test.after(async () => {
  await shared?.d.stop();
  await shared?.sh.close();
  cleanupTmp();
});

const S = () => shared!;
let seq = 0;
/** A recipient address no other test uses, to find this test's message at the smarthost. */
const uniq = (tag: string) => `${tag}-${process.pid}-${++seq}@remote.example`;

function sendmail(args: string[], input: string | Buffer, site: TestSite = S().site): Promise<CliResult> {
  // -C must come first: the first non-option word starts the recipient list.
  return runCli(['-C', site.configPath, ...args], { argv0: 'sendmail', input });
}

async function delivered(rcpt: string, sh: Smarthost = S().sh, timeoutMs = 10_000): Promise<ReceivedMessage> {
  return waitFor(`a message for ${rcpt}`, () => sh.messages.find((m) => m.to.includes(rcpt)), timeoutMs);
}

/** Sends and waits for delivery; returns the message as the smarthost got it. */
async function roundTrip(args: string[], input: string, rcpt: string): Promise<{ m: ReceivedMessage; text: string }> {
  const r = await sendmail(args, input);
  assert.is(r.code, 0, `sendmail exited ${r.code}: ${r.stderr}`);
  const m = await delivered(rcpt);
  return { m, text: m.raw.toString('utf8') };
}

function maildropFiles(site: TestSite): string[] {
  try {
    return fs.readdirSync(path.join(site.stateDir, 'maildrop'));
  } catch {
    return [];
  }
}

/** The header section as the smarthost received it (without the trailing blank line). */
const headerOf = (text: string) => text.slice(0, text.indexOf('\r\n\r\n') + 2);

// --- the maildrop: works without a daemon -------------------------------------------------

test('without a daemon: exit 0, the message waits in a 1733 maildrop; a daemon started later delivers it', async () => {
  const sh = await startSmarthost();
  extra.push({ stop: () => sh.close() });
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port));
  const rcpt = uniq('offline');
  const r = await sendmail([rcpt], 'Subject: while the daemon is down\n\nwaiting\n', site);
  assert.is(r.code, 0, r.stderr);
  const drop = path.join(site.stateDir, 'maildrop');
  assert.is((fs.statSync(drop).mode & 0o7777).toString(8), '1733');
  const files = maildropFiles(site);
  assert.is(files.length, 1, `maildrop holds ${files.join(', ')}`);
  assert.not.ok(files[0]!.startsWith('.'), 'only a temp file was left');
  assert.match(fs.readFileSync(path.join(drop, files[0]!), 'utf8'), /waiting\r\n/);
  assert.is(sh.messages.length, 0);

  const d = await startDaemon(site);
  extra.push(d);
  const m = await delivered(rcpt, sh);
  assert.match(m.raw.toString(), /Subject: while the daemon is down\r\n/);
  await waitFor('maildrop emptied', () => maildropFiles(site).length === 0, 5000);
});

test('with the daemon running: the poke gets the message delivered at once (not at the next scan)', async () => {
  const rcpt = uniq('prompt');
  const t0 = Date.now();
  await roundTrip([rcpt], 'Subject: prompt\n\nnow\n', rcpt);
  // The daemon's own maildrop scan runs once a minute; delivery within seconds means the poke worked.
  assert.ok(Date.now() - t0 < 10_000);
  await waitFor('maildrop emptied', () => maildropFiles(S().site).length === 0, 5000);
});

test('`tidemail sendmail` is the same command as `sendmail`', async () => {
  const rcpt = uniq('sub');
  const r = await runCli(['sendmail', '-C', S().site.configPath, rcpt], { input: 'Subject: via subcommand\n\nx\n' });
  assert.is(r.code, 0, r.stderr);
  assert.match((await delivered(rcpt)).raw.toString(), /Subject: via subcommand\r\n/);
});

// --- what the message looks like -----------------------------------------------------------

test('LF line ends become CRLF; no bare LF reaches the smarthost', async () => {
  const rcpt = uniq('lf');
  const { text } = await roundTrip([rcpt], 'Subject: lf\nX-Folded: one\n two\n\nline 1\n\nline 3\n', rcpt);
  assert.not.match(text, /[^\r]\n/);
  assert.match(text, /\r\nSubject: lf\r\nX-Folded: one\r\n two\r\n/);
  assert.ok(text.endsWith('\r\n\r\nline 1\r\n\r\nline 3\r\n'), JSON.stringify(text.slice(-40)));
});

test('input without a final newline still ends in CRLF', async () => {
  const rcpt = uniq('nonl');
  const { text } = await roundTrip([rcpt], 'Subject: no newline\n\nlast line', rcpt);
  assert.ok(text.endsWith('\r\n\r\nlast line\r\n'), JSON.stringify(text.slice(-30)));
});

test('From: is added when missing, with the -F full name and the envelope sender', async () => {
  const rcpt = uniq('from');
  const { m, text } = await roundTrip(['-F', 'Cron Daemon', rcpt], 'Subject: no from\n\nx\n', rcpt);
  assert.is(m.from, `${USER}@tidemail.test`);
  assert.match(headerOf(text), new RegExp(`^From: "?Cron Daemon"? <${USER}@tidemail\\.test>\\r$`, 'm'));
  assert.is(headerOf(text).match(/^From:/gim)?.length, 1);
});

test('a -F name with a comma is quoted, so the From header stays one address', async () => {
  const rcpt = uniq('comma');
  const { text } = await roundTrip(['-F', 'Smith, John', '-f', 'john@tidemail.test', rcpt], 'Subject: comma\n\nx\n', rcpt);
  assert.match(headerOf(text), /^From: "Smith, John" <john@tidemail\.test>\r$/m);
});

test('an existing From:, Date: and Message-ID: are kept byte-for-byte and not duplicated', async () => {
  const rcpt = uniq('keep');
  const head =
    'From:   "Weird  Spacing" <me@elsewhere.example>\n' +
    'Date: Tue, 1 Jan 2030 00:00:00 -0500 (EST)\n' +
    'Message-Id:\n <folded.id@elsewhere.example>\n' +
    'Subject: keep\n';
  const { text } = await roundTrip(['-F', 'Ignored Name', rcpt], `${head}\nbody\n`, rcpt);
  const h = headerOf(text);
  assert.ok(h.includes(head.replace(/\n/g, '\r\n')), `header changed:\n${h}`);
  assert.is(h.match(/^From:/gim)?.length, 1);
  assert.is(h.match(/^Date:/gim)?.length, 1);
  assert.is(h.match(/^Message-ID:/gim)?.length, 1);
  assert.not.match(h, /Ignored Name/);
});

test('Date: and Message-ID: are added when missing', async () => {
  const rcpt = uniq('add');
  const { text } = await roundTrip([rcpt], 'Subject: add them\n\nx\n', rcpt);
  const h = headerOf(text);
  assert.match(h, /^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r$/m);
  assert.match(h, /^Message-ID: <[^<>@\s]+@tidemail\.test>\r$/m);
  const date = /^Date: (.*)\r$/m.exec(h)![1]!;
  assert.ok(Math.abs(Date.parse(date) - Date.now()) < 5 * 60_000, `Date ${date} is not now`);
});

test('two submissions get different Message-IDs', async () => {
  const a = uniq('mid');
  const b = uniq('mid');
  const ta = (await roundTrip([a], 'Subject: a\n\nx\n', a)).text;
  const tb = (await roundTrip([b], 'Subject: b\n\nx\n', b)).text;
  const id = (t: string) => /^Message-ID: (.*)\r$/m.exec(t)![1];
  assert.is.not(id(ta), id(tb));
});

test('a line with a single dot ends the input without -i', async () => {
  const rcpt = uniq('dot');
  const { text } = await roundTrip([rcpt], 'Subject: dot\n\nbefore\n.\nafter\n', rcpt);
  assert.ok(text.endsWith('\r\n\r\nbefore\r\n'), JSON.stringify(text.slice(-40)));
  assert.not.match(text, /after/);
});

test('with -i or -oi a single dot is an ordinary line', async () => {
  await Promise.all(['-i', '-oi'].map(async (flag) => {
    const rcpt = uniq('nodot');
    const { text } = await roundTrip([flag, rcpt], 'Subject: dot\n\nbefore\n.\nafter\n..two\n', rcpt);
    assert.ok(text.endsWith('\r\n\r\nbefore\r\n.\r\nafter\r\n..two\r\n'), `${flag}: ${JSON.stringify(text.slice(-40))}`);
  }));
});

test('-t: recipients from To/Cc/Bcc (folded too); Bcc is removed from the message', async () => {
  const to = uniq('to');
  const cc = uniq('cc');
  const b1 = uniq('bcc');
  const b2 = uniq('bcc');
  const input = `To: Someone <${to}>\nCc: ${cc}\nBcc: ${b1},\n ${b2}\nSubject: bcc\n\nsecret list\n`;
  const { m, text } = await roundTrip(['-t'], input, to);
  assert.equal([...m.to].sort(), [to, cc, b1, b2].sort());
  assert.not.match(headerOf(text), /^Bcc:/im);
  assert.not.ok(text.includes(b1) || text.includes(b2), 'a Bcc address is still in the message');
  assert.match(headerOf(text), new RegExp(`^To: Someone <${to.replace(/\./g, '\\.')}>\\r\\nCc: `, 'm'));
});

test('-t with recipients on the command line too: both are used', async () => {
  const to = uniq('hdr');
  const arg = uniq('arg');
  const { m } = await roundTrip(['-t', arg], `To: ${to}\nSubject: both\n\nx\n`, to);
  assert.equal([...m.to].sort(), [to, arg].sort());
});

test('bare local parts are qualified with the hostname (recipients and -f)', async () => {
  // Local recipients do not go to the smarthost, so look at the envelope in the maildrop.
  const site = await makeSite();
  const r = await sendmail(['-f', 'backup', 'postmaster', 'Ann <ann@remote.example>, bob'], 'Subject: q\n\nx\n', site);
  assert.is(r.code, 0, r.stderr);
  const [file] = maildropFiles(site);
  const found = await readMaildropEnvelope(path.join(site.stateDir, 'maildrop', file!));
  assert.ok(found, 'maildrop file has no envelope');
  assert.is(found.env.sender, 'backup@tidemail.test');
  assert.equal(found.env.recipients, ['postmaster@tidemail.test', 'ann@remote.example', 'bob@tidemail.test']);
});

test('-t: a bare user name in To: is a local recipient, not dropped', async () => {
  const site = await makeSite();
  const r = await sendmail(['-t'], 'To: Ann <ann@remote.example>, root\nCc: undisclosed-recipients:;\nSubject: cron\n\nx\n', site);
  assert.is(r.code, 0, r.stderr);
  const [file] = maildropFiles(site);
  const found = await readMaildropEnvelope(path.join(site.stateDir, 'maildrop', file!));
  assert.equal(found?.env.recipients, ['ann@remote.example', 'root@tidemail.test']);
});

test("-f '' and -f '<>' give the null sender; -r sets the sender like -f", async () => {
  const cases = [[['-f', ''], ''], [['-f', '<>'], ''], [['-f<>'], ''], [['-r', 'ret@tidemail.test'], 'ret@tidemail.test']] as const;
  await Promise.all(cases.map(async ([args, want]) => {
    const rcpt = uniq('null');
    const { m, text } = await roundTrip([...args, rcpt], 'Subject: null sender\n\nx\n', rcpt);
    assert.is(m.from, want, `${args.join(' ')}`);
    if (!want) assert.match(headerOf(text), /^From: <MAILER-DAEMON@tidemail\.test>\r$/m);
  }));
});

test('the default sender is the calling user at the configured hostname', async () => {
  const rcpt = uniq('user');
  const { m, text } = await roundTrip([rcpt], 'Subject: who\n\nx\n', rcpt);
  assert.is(m.from, `${USER}@tidemail.test`);
  assert.match(headerOf(text), new RegExp(`^From: <${USER}@tidemail\\.test>\\r$`, 'm'));
});

test('legacy options around the recipients are ignored and the message still goes out', async () => {
  const rcpt = uniq('legacy');
  const args = ['-oem', '-odb', '-n', '-U', '-Am', '-O', 'DeliveryMode=b', '-B', '8BITMIME', '-N', 'never', '-R', 'hdrs', '-V', 'envid', '-X', '/nonexistent/log', '-L', 'tag', '-h', '5', '-v', '--', rcpt];
  const r = await sendmail(args, 'Subject: legacy\n\nx\n');
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stderr, /ignored for compatibility: .*-oem/);
  const m = await delivered(rcpt);
  assert.equal(m.to, [rcpt]);
});

// --- refusals: exit codes, and nothing left behind --------------------------------------------

function assertNothingQueued(site: TestSite): void {
  assert.equal(maildropFiles(site), [], 'the refused message left a file in the maildrop');
}

test('no recipients → EX_USAGE (64), nothing queued', async () => {
  const site = await makeSite();
  const r = await sendmail([], 'Subject: nobody\n\nx\n', site);
  assert.is(r.code, 64, r.stderr);
  assert.match(r.stderr, /no recipients/);
  assertNothingQueued(site);
});

test('-t and no recipient header → EX_DATAERR (65), nothing queued', async () => {
  const site = await makeSite();
  const r = await sendmail(['-t'], 'Subject: nobody\nFrom: me@tidemail.test\n\nx\n', site);
  assert.is(r.code, 65, r.stderr);
  assert.match(r.stderr, /no recipient/);
  assertNothingQueued(site);
});

test('bad recipient syntax → EX_DATAERR (65) and the message is not queued for anyone', async () => {
  const site = await makeSite();
  const bads = ['user@', '@host.example', 'foo@bar..example', 'two@@example.org', 'foo bar'];
  const results = await Promise.all(bads.map((bad) => sendmail(['good@remote.example', bad], 'Subject: bad\n\nx\n', site)));
  results.forEach((r, i) => {
    assert.is(r.code, 65, `${bads[i]}: exit ${r.code} ${r.stderr}`);
    assert.match(r.stderr, /bad recipient address/, bads[i]);
  });
  assertNothingQueued(site);
});

test('-t with a bad address in To: → 65', async () => {
  const site = await makeSite();
  const r = await sendmail(['-t'], 'To: broken@\nSubject: bad\n\nx\n', site);
  assert.is(r.code, 65, r.stderr);
  assertNothingQueued(site);
});

test('a bad -f sender → 65', async () => {
  const site = await makeSite();
  const r = await sendmail(['-f', 'a b@c', 'x@remote.example'], 'Subject: bad\n\nx\n', site);
  assert.is(r.code, 65, r.stderr);
  assertNothingQueued(site);
});

test('-bt / -bv → EX_USAGE (64) with a message naming the option', async () => {
  const opts = ['-bt', '-bv'];
  const results = await Promise.all(opts.map((o) => sendmail([o, 'x@remote.example'], '')));
  results.forEach((r, i) => {
    assert.is(r.code, 64, `${opts[i]}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`${opts[i]} is not supported`));
  });
});

test('-bi (newaliases) exits 0; -bp lists the queue', async () => {
  // Its own aliases file: the test must not depend on /etc/aliases existing on this machine.
  const dir = tmpDir('tidemail-bi-');
  const aliases = path.join(dir, 'aliases');
  fs.writeFileSync(aliases, 'postmaster: root\n');
  const site = await makeSite(`[local]\naliases = "${aliases}"\n`);
  const bi = await sendmail(['-bi'], '', site);
  assert.is(bi.code, 0, bi.stderr);
  assert.match(bi.stdout, /1 aliases/);
  const bp = await sendmail(['-bp'], '', site);
  assert.is(bp.code, 0, bp.stderr);
  assert.match(bp.stdout, /Mail queue is empty|Queue ID/);
});

// --- SMTP on stdin/stdout: sendmail -bs, smtpd, in.smtpd ---------------------------------------

/** A whole client session written at once, as scripts (and PHP's mail -bs) do. */
const session = (from: string, rcpt: string, subject: string, quit = true) =>
  `EHLO client.test\r\nMAIL FROM:<${from}>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\nSubject: ${subject}\r\n\r\nover stdio\r\n.\r\n${quit ? 'QUIT\r\n' : ''}`;

/** The reply codes in the order the session printed them (continuation lines skipped). */
const replyCodes = (out: string) => out.split('\r\n').filter((l) => /^\d{3} /.test(l)).map((l) => l.slice(0, 3));

test('sendmail -bs without a daemon: the scripted session is answered on stdout and lands in the maildrop', async () => {
  const site = await makeSite();
  const rcpt = uniq('bs');
  const r = await sendmail(['-bs'], session('alice@tidemail.test', rcpt, 'bs offline'), site);
  assert.is(r.code, 0, r.stderr);
  assert.equal(replyCodes(r.stdout), ['220', '250', '250', '250', '354', '250', '221'], r.stdout);
  const id = /^250 2\.0\.0 Ok: queued as (\S+)\r$/m.exec(r.stdout)?.[1];
  assert.ok(id, r.stdout);
  assert.equal(maildropFiles(site), [id]);
  const found = await readMaildropEnvelope(path.join(site.stateDir, 'maildrop', id));
  assert.is(found?.env.sender, 'alice@tidemail.test');
  assert.equal(found?.env.recipients, [rcpt]);
});

test('sendmail -bs with the daemon running: delivered to the smarthost', async () => {
  const rcpt = uniq('bsd');
  const r = await sendmail(['-bs'], session('alice@tidemail.test', rcpt, 'bs online'));
  assert.is(r.code, 0, r.stderr);
  const m = await delivered(rcpt);
  assert.is(m.from, 'alice@tidemail.test');
  // The daemon's pickup trace on top, then the SMTP session's own.
  assert.match(m.raw.toString(), /^Received: by tidemail\.test \(tidemail pickup, from userid \d+\)\r\n\t[^\r]*\r\nReceived: from client\.test [^\r]*\r\n(\t[^\r]*\r\n)+Subject: bs online\r\n\r\nover stdio\r\n$/);
});

test('sendmail -bs, interactive: each reply comes while stdin stays open (a client that waits for replies)', async () => {
  const rcpt = uniq('interactive');
  const proc = spawn(process.execPath, [linkAs('sendmail'), '-C', S().site.configPath, '-bs'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', r));
  try {
    const expect = async (re: RegExp) => waitFor(`reply ${re} in ${JSON.stringify(out)}`, () => re.test(out), 10_000);
    await expect(/^220 /m);
    const steps: [string, RegExp][] = [
      ['EHLO client.test', /^250 SIZE/m],
      ['MAIL FROM:<alice@tidemail.test>', /^250 2\.1\.0/m],
      [`RCPT TO:<${rcpt}>`, /^250 2\.1\.5/m],
      ['DATA', /^354 /m],
      ['Subject: interactive\r\n\r\nhi\r\n.', /^250 2\.0\.0 Ok: queued as/m],
      ['QUIT', /^221 /m],
    ];
    for (const [line, re] of steps) {
      proc.stdin!.write(line + '\r\n');
      await expect(re);
    }
    proc.stdin!.end();
    assert.is(await exited, 0);
  } finally {
    proc.kill();
  }
  await delivered(rcpt);
});

test('sendmail -bs from a script with LF line ends: accepted, stored with CRLF', async () => {
  const rcpt = uniq('bslf');
  const input = session('alice@tidemail.test', rcpt, 'lf session').replace(/\r\n/g, '\n');
  const r = await sendmail(['-bs'], input);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^250 2\.0\.0 Ok: queued as /m);
  assert.match(r.stdout, /^221 /m);
  const m = await delivered(rcpt);
  assert.ok(m.raw.toString().endsWith('\r\nSubject: lf session\r\n\r\nover stdio\r\n'), JSON.stringify(m.raw.toString()));
});

test('sendmail -bs: a session that ends without QUIT still keeps the accepted message', async () => {
  const rcpt = uniq('noquit');
  const r = await sendmail(['-bs'], session('alice@tidemail.test', rcpt, 'no quit', false));
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^250 2\.0\.0 Ok: queued as /m);
  await delivered(rcpt);
});

test('sendmail -bs: input that stops in the middle of DATA queues nothing', async () => {
  const site = await makeSite();
  const cut = session('alice@tidemail.test', 'x@remote.example', 'cut').replace(/\.\r\nQUIT\r\n$/, '');
  const r = await sendmail(['-bs'], cut, site);
  assert.not.match(r.stdout, /queued as/);
  assert.equal(maildropFiles(site), [], 'a file (or its temp file) was left in the maildrop');
});

test('sendmail -bs: a refused recipient gets its SMTP error and the rest of the session goes on', async () => {
  const site = await makeSite();
  const input = 'EHLO c\r\nMAIL FROM:<a@tidemail.test>\r\nRCPT TO:<broken@>\r\nRCPT TO:<ok@remote.example>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\nQUIT\r\n';
  const r = await sendmail(['-bs'], input, site);
  const codes = replyCodes(r.stdout);
  assert.match(codes[3]!, /^5\d\d$/, r.stdout);
  assert.equal([...codes.slice(0, 3), ...codes.slice(4)], ['220', '250', '250', '250', '354', '250', '221'], r.stdout);
  const id = /queued as (\S+)/.exec(r.stdout)?.[1];
  assert.ok(id, r.stdout);
  const found = await readMaildropEnvelope(path.join(site.stateDir, 'maildrop', id));
  assert.equal(found?.env.recipients, ['ok@remote.example']);
});

for (const name of ['smtpd', 'in.smtpd']) {
  test(`${name} (inetd) on a pipe: one SMTP session, delivered by the running daemon`, async () => {
    const rcpt = uniq(name.replace('.', ''));
    const r = await runCli(['--config', S().site.configPath], { argv0: name, input: session('bob@tidemail.test', rcpt, name) });
    assert.is(r.code, 0, r.stderr);
    assert.equal(replyCodes(r.stdout), ['220', '250', '250', '250', '354', '250', '221'], r.stdout);
    const m = await delivered(rcpt);
    assert.match(m.raw.toString(), new RegExp(`Subject: ${name.replace('.', '\\.')}\\r\\n\\r\\nover stdio\\r\\n$`));
  });
}

test('smtpd on an inherited TCP socket: the peer address decides relaying', async () => {
  // trusted_networks without loopback: a 127.0.0.1 peer may only mail local domains.
  const site = await makeSite();
  const cfg = fs.readFileSync(site.configPath, 'utf8').replace(/trusted_networks = .*/, 'trusted_networks = ["10.99.0.0/16"]');
  fs.writeFileSync(site.configPath, cfg);
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => {
    server.once('connection', (sock) => {
      // What inetd does: the accepted connection becomes the program's stdin and stdout.
      const proc = spawn(process.execPath, [linkAs('smtpd'), '--config', site.configPath], { stdio: [sock, sock, 'pipe'] });
      let stderr = '';
      proc.stderr!.on('data', (d) => (stderr += d));
      proc.on('exit', (code) => {
        sock.destroy();
        resolve({ code, stderr });
      });
    });
  });
  const c = await RawSmtp.connect(port);
  try {
    assert.match(await c.hello(), /^250/);
    assert.match(await c.cmd('MAIL FROM:<x@outside.example>'), /^250/);
    assert.match(await c.cmd('RCPT TO:<victim@remote.example>'), /^5\d\d /);
    assert.match(await c.cmd('RCPT TO:<postmaster@tidemail.test>'), /^250/);
    assert.match(await c.cmd('DATA'), /^354/);
    c.write('Subject: inetd\r\n\r\nx\r\n.\r\n');
    const id = /queued as (\S+)/.exec(await c.reply())?.[1];
    assert.ok(id);
    assert.match(await c.cmd('QUIT'), /^221/);
    const found = await readMaildropEnvelope(path.join(site.stateDir, 'maildrop', id));
    assert.equal(found?.env.recipients, ['postmaster@tidemail.test']);
  } finally {
    c.close();
    server.close();
  }
  const { code, stderr } = await done;
  assert.is(code, 0, stderr);
});

/** The launcher under another name, as the package installs it (runCli makes the same links). */
function linkAs(name: string): string {
  const link = path.join(REPO, 'dist', 'test-bin', name);
  fs.mkdirSync(path.dirname(link), { recursive: true });
  try {
    fs.symlinkSync(BIN, link);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  return link;
}

test.run();
