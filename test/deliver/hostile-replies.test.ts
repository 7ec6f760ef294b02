// What a hostile next hop can make us do with its replies, through the real daemon and CLI:
// terminal escapes in a 451 must reach no terminal raw (mailq, status, log), a server that
// offers AUTH without STARTTLS (or whose STARTTLS fails) must never receive our login, and one
// that floods blank lines (in place of a reply, or after the 250 to the dot) is cut at once.

import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { startScriptedSmtp, type Script, type ScriptedPeer } from '../helpers/scripted-smtp.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, writeSecret } from '../helpers/tmp.js';

const running: { stop(): Promise<unknown> }[] = [];
test.after.each(async () => {
  for (const r of running.splice(0).reverse()) await r.stop();
});
test.after(() => cleanupTmp());

async function setup(script: Script, route: (port: number, pw: string) => string): Promise<{ peer: ScriptedPeer; d: RunningDaemon; config: string }> {
  const peer = await startScriptedSmtp(script);
  running.push({ stop: () => peer.close() });
  const site = await makeSite('[queue]\nretry_min = "1h"');
  const pw = writeSecret(path.join(site.dir, 'secrets', 'isp'), 'hunter2\n');
  site.route('out', route(peer.port, pw));
  const d = await startDaemon(site);
  running.push(d);
  return { peer, d, config: site.configPath };
}

/** Raw control bytes a terminal would act on: C0 but tab/newline, DEL, and C1 (as UTF-8). */
function assertNoControls(what: string, out: string): void {
  const bad = /[\x00-\x08\x0b-\x1f\x7f]|\u00c2[\u0080-\u009f]|[\u0080-\u009f]/.exec(out);
  assert.not.ok(bad, `${what} printed a raw control character ${JSON.stringify(bad?.[0])}:\n${JSON.stringify(out)}`);
}

test('a 451 full of terminal escapes: mailq, queue show, status and log print them escaped, never raw', async () => {
  const evil = '451 4.7.1 \x1b[2J\x1b]0;pwned\x07try \x9b31m later\x7f';
  const ctx = await setup((cmd) => (/^RCPT/i.test(cmd) ? evil : null), (port) => `smarthost = "127.0.0.1:${port}"\ntls = "none"\n`);
  const r = await sendMessage(ctx.d.site.port, 'a@tidemail.test', ['e@remote.example'], 'Subject: esc\r\n\r\nx\r\n');
  const id = /queued as ([0-9A-F]{16})/.exec(r)?.[1];
  assert.ok(id, r);
  await ctx.d.waitForLog(/deferred to=<e@remote\.example>/);
  // The daemon's own log line is escaped too.
  assertNoControls('the daemon log', ctx.d.logs());
  assert.match(ctx.d.logs(), /\\x1b\[2J\\x1b\]0;pwned\\x07try/);
  for (const args of [['mailq'], ['queue', 'show', id!], ['status'], ['status', '--json'], ['log', id!], ['log', id!, '--json']]) {
    const out = await runCli([...args, '--config', ctx.config]);
    assert.is(out.code, 0, `${args.join(' ')}: ${out.stderr}`);
    assertNoControls(args.join(' '), out.stdout);
    assertNoControls(args.join(' ') + ' (stderr)', out.stderr);
    if (!args.includes('--json')) assert.match(out.stdout, /\\x1b\[2J\\x1b\]0;pwned\\x07try/, `${args.join(' ')}:\n${out.stdout}`);
  }
});

test('STARTTLS stripped by the peer (AUTH offered, no STARTTLS): no AUTH is sent, deferred with the reason', async () => {
  const ctx = await setup(
    (cmd) => (/^EHLO/i.test(cmd) ? '250-hostile.test\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING' : null),
    // An MX route (opportunistic TLS) to an address literal: no DNS needed.
    (port, pw) => `kind = "mx"\nport = ${port}\nauth.user = "me"\nauth.password_file = "${pw}"\n`,
  );
  await sendMessage(ctx.d.site.port, 'a@tidemail.test', ['s@[127.0.0.1]'], 'Subject: strip\r\n\r\nx\r\n');
  const m = await ctx.d.waitForLog(/deferred to=<s@\[127\.0\.0\.1\]>.*/);
  assert.match(m[0], /not sending AUTH to MX \[127\.0\.0\.1\]:\d+: the session is not encrypted \(STARTTLS was not offered, or it failed\)/, m[0]);
  assert.match(m[0], /allow_plain_auth = true/);
  assert.not.ok(ctx.peer.commands.some((c) => /^AUTH/i.test(c)), `AUTH reached the server: ${ctx.peer.commands.join(' | ')}`);
  assert.not.ok(ctx.peer.commands.some((c) => /^MAIL/i.test(c)), 'went on without the login');
  assert.not.match(ctx.d.logs(), /bounced|hunter2/);
});

test('STARTTLS offered but the handshake fails: the plaintext retry sends no AUTH either', async () => {
  const ctx = await setup(
    (cmd) => (/^EHLO/i.test(cmd) ? '250-hostile.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING' : /^STARTTLS/i.test(cmd) ? '220 go ahead\r\nthis is not TLS' : null),
    (port, pw) => `kind = "mx"\nport = ${port}\nauth.user = "me"\nauth.password_file = "${pw}"\n`,
  );
  await sendMessage(ctx.d.site.port, 'a@tidemail.test', ['h@[127.0.0.1]'], 'Subject: strip\r\n\r\nx\r\n');
  const m = await ctx.d.waitForLog(/deferred to=<h@\[127\.0\.0\.1\]>.*/, 15_000);
  assert.match(m[0], /not sending AUTH/);
  assert.not.ok(ctx.peer.commands.some((c) => /^AUTH/i.test(c)), `AUTH reached the server: ${ctx.peer.commands.join(' | ')}`);
});

test('with allow_plain_auth = true the same peer does get the login (the opt-out works)', async () => {
  const ctx = await setup(
    (cmd) => (/^EHLO/i.test(cmd) ? '250-hostile.test\r\n250-AUTH PLAIN LOGIN\r\n250 PIPELINING' : /^AUTH/i.test(cmd) ? '235 2.7.0 ok' : null),
    (port, pw) => `kind = "mx"\nport = ${port}\nallow_plain_auth = true\nauth.user = "me"\nauth.password_file = "${pw}"\n`,
  );
  await sendMessage(ctx.d.site.port, 'a@tidemail.test', ['p@[127.0.0.1]'], 'Subject: plain\r\n\r\nx\r\n');
  await ctx.d.waitForLog(/delivered to=<p@\[127\.0\.0\.1\]>/);
  assert.ok(ctx.peer.commands.some((c) => /^AUTH PLAIN/i.test(c)));
});

/** A smarthost that answers as usual until `floodAt` matches a command, then sends CRLFs forever. */
async function flooder(floodAt: RegExp): Promise<{ port: number; commands: string[]; open: () => number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const commands: string[] = [];
  const blank = Buffer.from('\r\n'.repeat(32 * 1024));
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.write('220 flood.test ESMTP\r\n');
    let buf = '';
    let inData = false;
    s.on('data', (d) => {
      buf += d.toString('latin1');
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        if (inData && line !== '.') continue;
        inData = false;
        commands.push(line);
        const verb = line.split(' ')[0]!.toUpperCase();
        if (!floodAt.test(line)) {
          if (verb === 'DATA') inData = true;
          s.write(verb === 'EHLO' ? '250-flood.test\r\n250 PIPELINING\r\n' : verb === 'DATA' ? '354 go\r\n' : verb === 'QUIT' ? '221 bye\r\n' : '250 2.0.0 ok\r\n');
          continue;
        }
        if (verb === '.') s.write('250 2.0.0 queued\r\n');
        const pump = () => {
          while (!s.destroyed && s.write(blank));
          if (!s.destroyed) s.once('drain', pump);
        };
        pump();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  const close = () => new Promise<void>((r) => (sockets.forEach((s) => s.destroy()), server.close(() => r())));
  return { port, commands, open: () => sockets.size, close };
}

async function floodSetup(floodAt: RegExp): Promise<{ f: Awaited<ReturnType<typeof flooder>>; d: RunningDaemon }> {
  const f = await flooder(floodAt);
  running.push({ stop: () => f.close() });
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('out', `smarthost = "127.0.0.1:${f.port}"\ntls = "none"\n`);
  const d = await startDaemon(site);
  running.push(d);
  return { f, d };
}

// Before, nodemailer queued every blank line and skipped one per turn of the loop: the daemon
// grew by 100 MB a minute at half a CPU, until helo_timeout (300 s) ended it.
test('blank lines forever in place of the EHLO reply: the connection cut at once, deferred with the reason', async () => {
  const { f, d } = await floodSetup(/^EHLO/i);
  await sendMessage(d.site.port, 'a@tidemail.test', ['b@remote.example'], 'Subject: flood\r\n\r\nx\r\n');
  const m = await d.waitForLog(/deferred to=<b@remote\.example>.*/, 10_000);
  assert.match(m[0], /smarthost 127\.0\.0\.1:\d+ sent \d+ lines that answer nothing \(blank lines\?\); connection cut/);
  await waitFor('every connection to the flooder cut', () => f.open() === 0, 10_000);
});

test('a 250 to the dot, then blank lines forever: delivered once, the connection cut', async () => {
  const { f, d } = await floodSetup(/^\.$/);
  await sendMessage(d.site.port, 'a@tidemail.test', ['c@remote.example'], 'Subject: flood\r\n\r\nx\r\n');
  await d.waitForLog(/delivered to=<c@remote\.example>/);
  // Kept idle, the session would have been ended with a QUIT whose reply never comes (300 s).
  await waitFor('every connection to the flooder cut', () => f.open() === 0, 10_000);
  assert.equal(f.commands.filter((c) => c === '.').length, 1);
  assert.not.match(d.logs(), /deferred|bounced/);
});

test.run();
