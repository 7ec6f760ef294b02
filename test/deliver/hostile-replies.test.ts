// What a hostile next hop can make us do with its replies, through the real daemon and CLI:
// terminal escapes in a 451 must reach no terminal raw (mailq, status, log), and a server that
// offers AUTH without STARTTLS (or whose STARTTLS fails) must never receive our login.

import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
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

test.run();
