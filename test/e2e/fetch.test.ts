// POP3 fetching end to end: a route's mailbox at a real Dovecot is fetched into the local
// Maildir the moment its link comes up, and by `tidemail fetch`; never while offline.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { haveDovecot, startDovecot } from '../helpers/dovecot.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

const maildirNew = (dir: string) => {
  try {
    return fs.readdirSync(path.join(dir, 'new')).map((f) => fs.readFileSync(path.join(dir, 'new', f), 'utf8'));
  } catch {
    return [];
  }
};

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
    assert.equal(r.code, 75);
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

test.run();
