// A local user controls their own home, so ~/Maildir and its tmp/ new/ cur/ are theirs to
// replace with symlinks. The daemon delivers there as its own user: following such a link lets
// the user make the daemon create files wherever the daemon's user may write — including
// STATE_DIR/maildrop, where a file owned by the daemon's user is trusted like root's (any
// envelope sender, any recipients, no X-Authentication-Warning). Runs as root, acting as uid 1.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { cleanupTmp, isRoot, tmpDir } from '../helpers/tmp.js';

const U1 = 1; // Debian's "daemon": an ordinary local user here

let sh: Smarthost;
let site: TestSite;
let d: RunningDaemon;
let home: string;

const asU1 = (script: string) => execFileSync('sh', ['-c', script], { uid: U1, gid: U1, env: { HOME: home, PATH: process.env.PATH }, stdio: ['ignore', 'pipe', 'pipe'] });

/** A message whose last two lines are a complete maildrop envelope trailer. */
function trailerBody(sender: string, rcpt: string): string {
  const json = JSON.stringify({ v: 1, sender, recipients: [rcpt], via: 'smtp', uid: 0, created: Date.now() }) + '\n';
  return `Subject: hello\n\nnothing to see\n${json}${String(Buffer.byteLength(json)).padStart(10, '0')}\n`;
}

/** Sends as uid 1 to alice and waits until the daemon has settled that delivery (any outcome). */
async function mailAlice(body: string): Promise<void> {
  const before = (d.logs().match(/to=<alice@tidemail\.test> route=local/g) ?? []).length;
  const r = await runCli(['-C', site.configPath, 'alice@tidemail.test'], { argv0: 'sendmail', input: body, uid: U1, gid: U1 });
  assert.is(r.code, 0, r.stderr);
  await waitFor('delivery to alice settled', () => (d.logs().match(/to=<alice@tidemail\.test> route=local/g) ?? []).length > before, 15_000);
}

if (!isRoot()) {
  test.skip('maildir symlinks (needs root to act as a local user)', () => undefined);
} else {
  test.before(async () => {
    sh = await startSmarthost();
    const base = tmpDir();
    home = path.join(base, 'alice');
    fs.mkdirSync(home, { mode: 0o755 });
    fs.chownSync(home, U1, U1);
    const passwd = path.join(base, 'passwd');
    fs.writeFileSync(passwd, `alice:x:${U1}:${U1}::${home}:/bin/sh\n`);
    // The default local delivery: maildir "~/Maildir".
    site = await makeSite(`[local]\ndomains = ["tidemail.test"]\npasswd_file = "${passwd}"\n`, { smtpToml: 'greet_delay = "0s"' });
    site.route('isp', smarthostRoute(sh.port));
    d = await startDaemon(site);
  });
  test.after(async () => {
    await d?.stop();
    await sh?.close();
    cleanupTmp();
  });

  test('~/Maildir/new -> STATE_DIR/maildrop: the daemon does not deliver through it, and nothing is re-injected with a forged sender', async () => {
    const drop = path.join(site.stateDir, 'maildrop');
    asU1(`rm -rf ~/Maildir && mkdir -p ~/Maildir/tmp ~/Maildir/cur && chmod 777 ~/Maildir ~/Maildir/tmp ~/Maildir/cur && ln -s ${drop} ~/Maildir/new`);
    const victim = `victim-${process.pid}@remote.example`;
    await mailAlice(trailerBody('ceo@bank.example', victim));
    const line = /to=<alice@tidemail\.test> route=local result="([^"]*)"/.exec(d.logs())?.[1] ?? '';
    assert.not.match(line, /^2\.0\.0 delivered/, `delivered through a symlinked new/: ${line}`);
    // Give a re-injection the time a sentinel takes to travel the same path.
    const sentinel = `sentinel-${process.pid}@remote.example`;
    assert.is((await runCli(['-C', site.configPath, sentinel], { argv0: 'sendmail', input: 'Subject: s\n\nx\n' })).code, 0);
    await waitFor('sentinel', () => sh.messages.find((m) => m.to.includes(sentinel)));
    const forged = sh.messages.find((m) => m.to.includes(victim));
    assert.not.ok(forged, `re-injected from the maildrop with sender <${forged?.from}>`);
    assert.not.match(d.logs(), /accepted from=<ceo@bank\.example>/);
  });

  test('~/Maildir -> STATE_DIR: the daemon creates no cur/ new/ tmp/ in its own state dir', async () => {
    asU1(`rm -rf ~/Maildir && ln -s ${site.stateDir} ~/Maildir`);
    await mailAlice('Subject: hi\n\nx\n');
    for (const sub of ['cur', 'new', 'tmp']) assert.not.ok(fs.existsSync(path.join(site.stateDir, sub)), `created ${path.join(site.stateDir, sub)}`);
  });
}

test.run();
