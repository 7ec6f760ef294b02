// Issue 15 §2: what a check learns about one message (SPF for its MAIL FROM, DKIM for its
// content) must not vouch for the next message on the same connection. A real daemon with
// greylist at RCPT and spf-dkim-dmarc at DATA, real DKIM keys and signatures, DNS from the local
// responder: after one message that passed, a second one in the same session from another
// sender is greylisted like any stranger's.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HeaderField } from '../../src/checks/check.js';
import { createCheck as createSign } from '../../src/checks/dkim-sign.js';
import { buildCheck, context } from '../helpers/check-env.js';
import { runCli } from '../helpers/daemon.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { waitFor } from '../helpers/ports.js';
import type { RawSmtp } from '../helpers/smtp-client.js';
import { frontHelpers } from '../helpers/smtp-front.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const test = suite('checks/transaction-notes');
const { front, session } = frontHelpers(test);

let dns: DnsServer;
let keyDir: string;

test.before(async () => {
  keyDir = path.join(tmpDir(), 'dkim');
  const r = await runCli(['dkim', 'keygen', 'example.org', '--out', keyDir]);
  assert.is(r.code, 0, r.stderr);
  const record = [...(/_domainkey\.\S+ IN TXT (.*)$/m.exec(r.stdout)?.[1] ?? '').matchAll(/"([^"]*)"/g)].map((m) => m[1]).join('');
  assert.ok(record, r.stdout);
  dns = await startDnsServer({
    // SPF fails for example.org from loopback: only the DKIM signature can vouch for its mail.
    'example.org': { TXT: ['v=spf1 -all'] },
    'tidemail._domainkey.example.org': { TXT: [record] },
    // example.com allows loopback: its mail passes SPF.
    'example.com': { TXT: ['v=spf1 ip4:127.0.0.0/8 -all'] },
  });
});

test.after(async () => {
  await dns?.close();
});

/** The message signed by our dkim-sign check, as the sending side would hand it over. */
async function signed(raw: string): Promise<string> {
  const signer = await buildCheck(createSign, 'dkim-sign', `[checks.dkim-sign]\nkeys = { "example.org" = "${keyDir}/example.org.key" }\n`);
  const section = raw.slice(0, raw.indexOf('\r\n\r\n') + 2);
  const headers: HeaderField[] = section.replace(/\r\n(?=[ \t])/g, '').split('\r\n').filter(Boolean).map((l) => ({ name: l.slice(0, l.indexOf(':')), value: l.slice(l.indexOf(':') + 1).trim() }));
  const v = await signer.run('data', context('data', { trusted: true, sender: 'alice@example.org', headers, headerSection: section, body: () => Readable.from([Buffer.from(raw)]) }));
  const sig = v.action === 'next' ? v.addHeaders?.find((h) => h.name === 'DKIM-Signature') : undefined;
  assert.ok(sig, `not signed: ${JSON.stringify(v)}`);
  return `${sig.name}: ${sig.value}\r\n${raw}`;
}

const message = (from: string, id: string) =>
  `From: <${from}>\r\nTo: <me@tidemail.test>\r\nSubject: hello\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <${id}@example>\r\n\r\nhello\r\n`;

/** A daemon whose only local user `me` (from a passwd file, not the system's) gets mail in a Maildir. */
async function daemon(checks: string) {
  const mail = tmpDir('tidemail-mail-');
  fs.chmodSync(mail, 0o777);
  const home = tmpDir('tidemail-home-');
  const [uid, gid] = isRoot() ? [65534, 65534] : [os.userInfo().uid, os.userInfo().gid];
  const passwd = writeFile(path.join(tmpDir(), 'passwd'), `me:x:${uid}:${gid}:Me:${home}:/bin/sh\n`);
  const f = await front({
    trusted: ['192.0.2.0/24'], // loopback is a stranger here
    smtpToml: 'greet_delay = "0s"',
    extraToml:
      `${checks}\n[checks.greylist]\ndelay = "1s"\n[checks.spf-dkim-dmarc]\ndns_servers = ["127.0.0.1:${dns.port}"]\n` +
      `[local]\ndomains = ["tidemail.test"]\npasswd_file = "${passwd}"\ndelivery = "maildir"\nmaildir = "${mail}/%u"\n`,
  });
  /** The delivered messages, oldest first. */
  const delivered = async (n: number): Promise<string[]> => {
    const dir = path.join(mail, 'me', 'new');
    const files = await waitFor(`${n} message(s) in ${dir}`, () => {
      const l = fs.existsSync(dir) ? fs.readdirSync(dir).sort() : [];
      return l.length >= n ? l : null;
    });
    return files.map((x) => fs.readFileSync(path.join(dir, x), 'utf8'));
  };
  return { ...f, delivered };
}

/** MAIL and RCPT, waiting out the greylist delay by retrying the RCPT (a real MTA's retry, shortened). */
async function throughGreylist(c: RawSmtp, from: string): Promise<void> {
  assert.match(await c.cmd(`MAIL FROM:<${from}>`), /^250 /);
  const first = await c.cmd('RCPT TO:<me@tidemail.test>');
  assert.match(first, /^450 4\.7\.1 Greylisted/, 'a new sender with nothing to vouch for it is greylisted first');
  await waitFor('the greylist delay to pass', async () => /^250 /.test(await c.cmd('RCPT TO:<me@tidemail.test>')), 10_000, 300);
}

async function data(c: RawSmtp, raw: string): Promise<string> {
  assert.match(await c.cmd('DATA'), /^354 /);
  c.write(raw);
  c.write('.\r\n');
  return c.reply(30_000);
}

test('a DKIM pass for one message does not exempt the next message on the connection from greylisting', async () => {
  const f = await daemon('[checks]\nrcpt = ["greylist"]\ndata = ["spf-dkim-dmarc"]');
  const c = await session(f.site.port);
  await throughGreylist(c, 'alice@example.org');
  assert.match(await data(c, await signed(message('alice@example.org', 'm1'))), /^250 /);
  const [first] = await f.delivered(1);
  assert.match(first!, /dkim=pass/, 'the first message really passed DKIM');
  assert.match(first!, /spf=fail/, 'and only DKIM vouched for it');
  // Same connection, another sender, nothing signed: a stranger's message like any other.
  assert.match(await c.cmd('MAIL FROM:<mallory@spam.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Greylisted/);
});

test('an SPF pass for sender A does not exempt sender B in the next transaction, nor after RSET', async () => {
  const f = await daemon('[checks]\nrcpt = ["greylist"]\ndata = ["spf-dkim-dmarc"]');
  const c = await session(f.site.port);
  await throughGreylist(c, 'anna@example.com');
  assert.match(await data(c, message('anna@example.com', 'm2')), /^250 /);
  const [first] = await f.delivered(1);
  assert.match(first!, /spf=pass/, 'the first message really passed SPF');
  assert.match(await c.cmd('MAIL FROM:<bert@spam.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Greylisted/);
  assert.match(await c.cmd('RSET'), /^250 /);
  assert.match(await c.cmd('MAIL FROM:<carl@spam.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Greylisted/);
});

test('SPF at MAIL: a pass for sender A, then RSET, does not exempt sender B', async () => {
  const f = await daemon('[checks]\nmail = ["spf-dkim-dmarc"]\nrcpt = ["greylist"]\ndata = ["spf-dkim-dmarc"]');
  const c = await session(f.site.port);
  assert.match(await c.cmd('MAIL FROM:<anna@example.com>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^250 /, 'SPF pass at MAIL vouches for this transaction');
  assert.match(await c.cmd('RSET'), /^250 /);
  assert.match(await c.cmd('MAIL FROM:<bert@spam.example>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^450 4\.7\.1 Greylisted/);
  // And A again in the same session: vouched for again (its own SPF, not a leftover).
  assert.match(await c.cmd('RSET'), /^250 /);
  assert.match(await c.cmd('MAIL FROM:<anna@example.com>'), /^250 /);
  assert.match(await c.cmd('RCPT TO:<me@tidemail.test>'), /^250 /);
});

test.run();
