// Invisible Unicode from a peer: controls (C0, C1), format characters (bidi overrides and marks,
// U+061C, the soft hyphen, zero-width ones) are refused in HELO/EHLO names and in MAIL/RCPT
// addresses (SMTPUTF8 or not), over real loopback sessions with a running daemon; real non-ASCII
// names (U-labels, SMTPUTF8 local parts, ZWNJ inside Persian) pass. What still reaches a log line
// or an error (a local sender given to sendmail -f, refused there too) is shown escaped, never raw.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../../helpers/daemon.js';
import { RawSmtp } from '../../helpers/smtp-client.js';
import { cleanupTmp } from '../../helpers/tmp.js';

let d: RunningDaemon;
test.before(async () => {
  d = await startDaemon(await makeSite());
});
test.after(async () => {
  await d.stop();
  cleanupTmp();
});

const RAW_INVISIBLE = /[\u0080-\u009f\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\u3164\u034f\ufe0f\u2065\u2800]/;
const HIDDEN: Record<string, string> = {
  'U+202E RIGHT-TO-LEFT OVERRIDE': '\u202e',
  'U+061C ARABIC LETTER MARK': '\u061c',
  'U+00AD SOFT HYPHEN': '\u00ad',
  'U+200F RIGHT-TO-LEFT MARK': '\u200f',
  'U+2066 LEFT-TO-RIGHT ISOLATE': '\u2066',
  'U+200D ZERO WIDTH JOINER between ASCII': '\u200d',
  'U+0085 NEXT LINE (C1)': '\u0085',
  'U+0007 BELL (C0)': '\u0007',
  'U+3164 HANGUL FILLER (a letter that renders as nothing)': '\u3164',
  'U+034F COMBINING GRAPHEME JOINER (a mark)': '\u034f',
  'U+FE0F VARIATION SELECTOR-16': '\ufe0f',
  'U+2065 (unassigned, default-ignorable)': '\u2065',
  'U+2800 BRAILLE PATTERN BLANK': '\u2800',
};

async function session(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(d.site.port);
  await c.reply();
  return c;
}

// One session per character: each refusal counts against max_errors (20).
test('EHLO/HELO with a control or format character: 501, the session goes on', async () => {
  for (const [what, ch] of Object.entries(HIDDEN)) {
    const c = await session();
    try {
      for (const verb of ['EHLO', 'HELO']) {
        const r = await c.cmd(`${verb} mail${ch}.example.org`);
        assert.match(r, /^501 /, `${verb} with ${what}: ${r}`);
      }
      assert.match(await c.cmd('MAIL FROM:<a@example.org>'), /^503 /, 'no HELO name was taken');
      assert.match(await c.cmd('EHLO mail.example.org'), /^250[- ]/);
    } finally {
      c.close();
    }
  }
});

test('HELO names clients really send still pass: U-labels, A-labels, address literals, Windows names', async () => {
  const c = await session();
  try {
    for (const name of ['bücher.example', 'xn--bcher-kva.example', '[127.0.0.1]', '[IPv6:::1]', 'DESKTOP-4711', 'my_host', 'mail.example.org.', '192.168.1.5']) {
      assert.match(await c.cmd(`EHLO ${name}`), /^250[- ]/, name);
    }
    for (const bad of ['a..b', '[bad[literal]', 'mail/example', 'x'.repeat(64) + '.example']) {
      assert.match(await c.cmd(`EHLO ${bad}`), /^501 /, bad);
    }
  } finally {
    c.close();
  }
});

test('MAIL FROM and RCPT TO with a control or format character: 501 5.1.7 / 501 5.1.3, with or without SMTPUTF8', async () => {
  for (const [what, ch] of Object.entries(HIDDEN)) {
    const c = await session();
    try {
      await c.cmd('EHLO client.test');
      for (const utf8 of ['', ' SMTPUTF8']) {
        for (const addr of [`ev${ch}il@example.org`, `evil@exa${ch}mple.org`]) {
          const r = await c.cmd(`MAIL FROM:<${addr}>${utf8}`);
          assert.match(r, /^501 5\.1\.7 /, `MAIL with ${what}${utf8}: ${r}`);
        }
      }
      assert.match(await c.cmd('MAIL FROM:<sender@example.org> SMTPUTF8'), /^250 /);
      const r = await c.cmd(`RCPT TO:<ro${ch}ot@tidemail.test>`);
      assert.match(r, /^501 5\.1\.3 /, `RCPT with ${what}: ${r}`);
    } finally {
      c.close();
    }
  }
});

test('an address whose local part starts with "-" (an option to an MDA) is refused: 501 5.1.7 / 5.1.3; a "-" inside passes', async () => {
  const c = await session();
  try {
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<-oQ/tmp/x@example.org>'), /^501 5\.1\.7 /);
    assert.match(await c.cmd('MAIL FROM:<a-b@example.org>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<-froot@tidemail.test>'), /^501 5\.1\.3 /);
    assert.match(await c.cmd('RCPT TO:<x-y@example.org>'), /^250 /);
  } finally {
    c.close();
  }
});

test('real non-ASCII addresses with SMTPUTF8 pass, ZWNJ inside a Persian word included', async () => {
  const c = await session();
  try {
    await c.cmd('EHLO client.test');
    assert.match(await c.cmd('MAIL FROM:<jürgen@bücher.example> SMTPUTF8'), /^250 /);
    // Relayed (the client is on a trusted network), so the domain's existence does not matter here.
    assert.match(await c.cmd('RCPT TO:<می\u200cخواهم@example.org>'), /^250 /);
    assert.match(await c.cmd('RCPT TO:<δοκιμή@παράδειγμα.δοκιμή>'), /^250 /);
  } finally {
    c.close();
  }
});

test('a sender with invisible characters (sendmail -f) is refused as SMTP refuses it, and the error shows it escaped', async () => {
  const sender = 'ev\u202eil\u00ad\u061c\u200f@example.org';
  const r = await runCli(['sendmail', '-C', d.site.configPath, '-f', sender, 'someone@example.org'], { input: 'Subject: x\n\nhi\n' });
  assert.is(r.code, 65, r.stderr);
  assert.ok(r.stderr.includes('ev\\u202eil\\xad\\u061c\\u200f@example.org'), r.stderr);
  assert.not.match(r.stderr, RAW_INVISIBLE);
  const q = await runCli(['mailq', '--config', d.site.configPath]);
  assert.is(q.code, 0, q.stderr);
  assert.not.match(q.stdout, /ev\\u202e|ev\u202e/, 'nothing was queued');
});

test.run();
