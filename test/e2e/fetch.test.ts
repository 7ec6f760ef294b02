// POP3 fetching end to end: a route's mailbox at a real Dovecot is fetched into the local
// Maildir the moment its link comes up, and by `tidemail fetch`; never while offline. Also:
// multidrop recipients from headers, oversize = "headers", and `tidemail fetch` progress on a
// pseudo-terminal (script(1) from util-linux) versus silence when piped.

import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { BIN, makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { hdbSignature, startClamd } from '../helpers/clamd.js';
import { haveDovecot, startDovecot } from '../helpers/dovecot.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { isRoot, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';
import { maildirNew } from '../helpers/maildir.js';

const keep = stopAfterEach(test);

(haveDovecot() ? test : test.skip)('link up fetches the route\'s POP3 mailbox into the local Maildir; offline nothing is fetched', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    for (let i = 1; i <= 3; i++) dovecot.deliver('me', `From: friend@remote.example\r\nSubject: pop ${i}\r\n\r\nbody ${i}\r\n`);
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const flag = path.join(tmpDir(), 'isp.up');
    const site = await makeSite(`[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon" }`);
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\nonline.file = "${flag}"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\n`);
    const d = keep(await startDaemon(site));
    await sleep(800);
    assert.equal(dovecot.logins('me'), 0, 'logged in to POP3 while offline');
    fs.writeFileSync(flag, '');
    const box = `${mail}/daemon/Maildir`;
    await waitFor('3 fetched messages in the Maildir', () => maildirNew(box).length === 3, 10_000);
    assert.match(maildirNew(box).join('\n'), /Received: from 127\.0\.0\.1 by tidemail\.test \(tidemail\) with POP3/);
    await waitFor('deleted on the server', () => dovecot.mailbox('me').length === 0, 5000);
    await d.waitForLog(/fetched account=isp\/me fetched=3/);
    // New mail at the server: `tidemail fetch` brings it now.
    dovecot.deliver('me', 'Subject: pop 4\r\n\r\nbody 4\r\n');
    const r = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /isp\/me: 1 fetched/);
    await waitFor('4th message', () => maildirNew(box).length === 4, 10_000);
  } finally {
    await dovecot.stop();
  }
});

(haveDovecot() ? test : test.skip)('a wrong POP3 password: clear error, nothing fetched, status says so', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    dovecot.deliver('me', 'Subject: x\r\n\r\nx\r\n');
    const site = await makeSite();
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'wrong\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\n`);
    const d = keep(await startDaemon(site));
    await d.waitForLog(/fetch failed account=isp\/me/);
    const r = await runCli(['fetch', 'isp/me', '--config', site.configPath]);
    assert.equal(r.code, 78, "a refused login needs a person: EX_CONFIG, not a retry"); // sysexits
    assert.match(r.stdout, /isp\/me: .*(refused|password|auth)/i);
    assert.equal(dovecot.mailbox('me').length, 1);
  } finally {
    await dovecot.stop();
  }
});

(haveDovecot() ? test : test.skip)('kill -9 mid-fetch: after a restart every message arrives; duplicates stay few', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    const N = 30;
    for (let i = 1; i <= N; i++) dovecot.deliver('me', `Subject: m${i}\r\nX-Tag: m${i}\r\n\r\n${'z'.repeat(50_000)}\r\n`);
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const site = await makeSite(`[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon" }`);
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\ninterval = "2s"\n`);
    const box = `${mail}/daemon/Maildir`;
    const d = await startDaemon(site);
    await waitFor('a few fetched', () => maildirNew(box).length >= 3, 15_000, 5);
    await d.kill9();
    const d2 = keep(await startDaemon(site));
    const tags = () => new Set(maildirNew(box).map((m) => /X-Tag: (m\d+)/.exec(m)?.[1]));
    await waitFor('all fetched after restart', () => tags().size === N, 20_000, 50).catch((e: Error) => {
      const odd = maildirNew(box).filter((m) => !/X-Tag: m\d+/.test(m)).map((m) => m.slice(0, 300));
      throw new Error(`${e.message}: ${tags().size} of ${N} in the Maildir, ${dovecot.mailbox('me').length} left at the server; without a tag: ${JSON.stringify(odd)}\n${d2.logs().slice(-2000)}`);
    });
    // At most the one message being fetched, plus local deliveries that had reached the Maildir
    // but whose removal from the queue was not committed yet (at-least-once, never lost).
    assert.ok(maildirNew(box).length <= N + 6, `${maildirNew(box).length - N} duplicates`);
    // Never an empty or broken copy: every file in the Maildir is a whole fetched message.
    assert.ok(maildirNew(box).every((m) => /X-Tag: m\d+\n\nz{50000}\n$/.test(m)), 'a delivered copy is not a whole message');
    void d2;
  } finally {
    await dovecot.stop();
  }
});

(haveDovecot() ? test : test.skip)('an untrusted POP3S certificate: FAILING in status, no retry on every link event', async () => {
  const dovecot = await startDovecot({ users: { me: 'secret' }, tls: true });
  try {
    dovecot.deliver('me', 'Subject: x\r\n\r\nx\r\n');
    const flag = path.join(tmpDir(), 'isp.up');
    fs.writeFileSync(flag, '');
    const site = await makeSite();
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\nonline.file = "${flag}"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.tlsPort}"\ntls = "implicit"\nuser = "me"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\n`);
    const d = keep(await startDaemon(site));
    await d.waitForLog(/fetch failed account=isp\/me .*TLS to POP3 server 127\.0\.0\.1:\d+ failed/);
    const attempts = () => (dovecot.log().match(/pop3-login: .*(SSL_accept|TLS handshaking)/g) ?? []).length;
    await waitFor('Dovecot to log the failed handshake', () => attempts() === 1, 5000).catch((e: Error) => {
      throw new Error(`${e.message}\n${dovecot.log().slice(-1500)}`);
    });
    // The link flaps three times: each comes online again, none retries the failing account.
    for (let i = 0; i < 3; i++) {
      fs.rmSync(flag);
      await sleep(400);
      fs.writeFileSync(flag, '');
      await sleep(400);
    }
    await waitFor('the link to come up four times', () => (d.logs().match(/link up route=isp/g) ?? []).length >= 4, 5000);
    await sleep(500);
    assert.equal(attempts(), 1, 'the failing account was retried on link events');
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /isp\/me .*FAILING: TLS to POP3 server .*set tls_ca_file/);
    assert.equal(dovecot.mailbox('me').length, 1);
    assert.equal(dovecot.logins('me'), 0);
  } finally {
    await dovecot.stop();
  }
});

const haveClamd = () => {
  try {
    execFileSync('sh', ['-c', 'command -v clamd'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

(haveDovecot() && haveClamd() ? test : test.skip)('[checks] data: clamd refuses a fetched virus, which stays on the server; the clean one is delivered', async () => {
  // A fresh "virus" per run: only this test's clamd database knows it.
  const virus = Buffer.concat([Buffer.from('tidemail fetch clamd test\n'), randomBytes(64)]);
  const clamd = await startClamd({ signatures: { 'fetch.hdb': hdbSignature(virus, 'Tidemail.Test.Fetch') } });
  const dovecot = await startDovecot({ users: { me: 'secret' } });
  try {
    const withAttachment = (subject: string, content: Buffer) =>
      `From: a@example.org\r\nSubject: ${subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="x.bin"\r\n\r\n${content.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n--b1--\r\n`;
    dovecot.deliver('me', withAttachment('infected', virus));
    dovecot.deliver('me', withAttachment('clean', Buffer.from('the quarterly numbers\n')));
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const site = await makeSite(`[checks]\ndata = ["clamd"]\n[checks.clamd]\naddress = "${clamd.address}"\n[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon" }`);
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "me"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\nkeep = false\n`);
    const d = keep(await startDaemon(site));
    const box = `${mail}/daemon/Maildir`;
    await waitFor('the clean message in the Maildir', () => maildirNew(box).length === 1, 15_000);
    assert.match(maildirNew(box)[0]!, /Subject: clean/);
    await d.waitForLog(/fetched message refused by check; left on the server check=clamd account=isp\/me reply="?554 5\.7\.1 Message contains a virus \(Tidemail\.Test\.Fetch/);
    await waitFor('the clean one deleted on the server', () => dovecot.mailbox('me').length === 1, 5000);
    // Fetched again: the refused message is remembered, not offered to clamd once more.
    const r = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /isp\/me: 0 fetched/);
    assert.equal(dovecot.mailbox('me').length, 1, 'the infected message must stay on the server');
    assert.equal((d.logs().match(/clamd found a virus/g) ?? []).length, 1);
    assert.equal(maildirNew(box).length, 1);
  } finally {
    await dovecot.stop();
    await clamd.stop();
  }
});

/** Runs `tidemail ARGS` on a pseudo-terminal; resolves with everything it wrote there. */
function runOnTty(args: string[]): Promise<{ code: number | null; out: string }> {
  const cmd = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve, reject) => {
    const p = spawn('script', ['-qec', cmd, '/dev/null'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const t = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('exit', (code) => (clearTimeout(t), resolve({ code, out })));
  });
}

(haveDovecot() && isRoot() ? test : test.skip)('multidrop by X-Original-To, oversize headers, and `tidemail fetch` progress on a terminal only', async () => {
  const dovecot = await startDovecot({ users: { drop: 'secret' } });
  try {
    const mail = tmpDir('tidemail-mail-');
    fs.chmodSync(mail, 0o777);
    const site = await makeSite(`[local]\naliases = "${writeFile(path.join(mail, 'aliases'), '')}"\nmaildir = "${mail}/%u/Maildir"\nusers = { alice = "daemon", bob = "bin" }`);
    writeSecret(path.join(site.dir, 'secrets', 'pop'), 'secret\n');
    site.route('isp', `smarthost = "127.0.0.1:9"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${dovecot.port}"\ntls = "none"\nuser = "drop"\npassword_file = "${site.dir}/secrets/pop"\ndeliver_to = "alice"\nrecipients_from = ["X-Original-To"]\nrecipients_domains = ["example.org"]\nmax_size = "1M"\noversize = "headers"\n`);
    const alice = `${mail}/daemon/Maildir`;
    const bob = `${mail}/bin/Maildir`;
    dovecot.deliver('drop', 'X-Original-To: bob@example.org\r\nSubject: for bob\r\n\r\nhi bob\r\n');
    dovecot.deliver('drop', 'X-Original-To: mallory@elsewhere.example\r\nSubject: for nobody here\r\n\r\nx\r\n');
    dovecot.deliver('drop', `X-Original-To: bob@example.org\r\nSubject: too big\r\n\r\n${'b'.repeat(76).concat('\r\n').repeat(20_000)}`);
    const d = keep(await startDaemon(site));
    await d.waitForLog(/fetched account=isp\/drop fetched=2/);
    await waitFor('bob: his message and the header-only note', () => maildirNew(bob).length === 2, 10_000);
    await waitFor('alice: the one for no local address', () => maildirNew(alice).length === 1, 10_000);
    assert.match(maildirNew(alice)[0]!, /Subject: for nobody here/);
    const note = maildirNew(bob).find((m) => m.includes('Subject: too big'))!;
    assert.match(note, /X-Tidemail-Oversize: \d+ bytes, over max_size 1048576; only the header section was fetched/);
    assert.not.match(note, /bbbb/);
    assert.equal(dovecot.mailbox('drop').length, 1, 'the big one stays on the server');

    // 30 messages of ~900 KB: long enough for the terminal to show progress.
    for (let i = 1; i <= 30; i++) dovecot.deliver('drop', `X-Original-To: bob@example.org\r\nSubject: p${i}\r\n\r\n${'p'.repeat(76).concat('\r\n').repeat(11_500)}`);
    const tty = await runOnTty(['fetch', '--config', site.configPath]);
    assert.equal(tty.code, 0, tty.out);
    assert.match(tty.out, /isp\/drop: 30 fetched/);
    const shown = [...tty.out.matchAll(/isp\/drop: (\d+) of 30 messages, ([\d.]+) (B|KiB|MiB)/g)];
    assert.ok(shown.length > 0, `no progress on the terminal: ${JSON.stringify(tty.out.slice(0, 500))}`);
    assert.ok(shown.every((m) => Number(m[1]) <= 30));

    dovecot.deliver('drop', 'X-Original-To: bob@example.org\r\nSubject: quiet\r\n\r\nx\r\n');
    const piped = await runCli(['fetch', '--config', site.configPath]);
    assert.equal(piped.code, 0, piped.stderr);
    assert.match(piped.stdout, /isp\/drop: 1 fetched/);
    assert.equal(piped.stderr, '', 'progress written although stderr is not a terminal');
    await waitFor('all of bob\'s mail', () => maildirNew(bob).length === 33, 20_000);
  } finally {
    await dovecot.stop();
  }
});

test.run();
