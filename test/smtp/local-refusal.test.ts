// What an SMTP client reads when a local recipient is refused while it waits
// (src/smtp/local-refusal.ts), through the real daemon: the status and the fixed text a DSN
// would say, never the recipient's end — a .forward pipe and its output, an MDA's path and
// words, alias members, where a .forward forwards, a list file's path. At RCPT and after
// pre-queue delivery alike, and the same for a local client (sendmail -bs) as for a stranger.
// The reasons stay in the log and root's `tidemail log`. Users come from a passwd-format file
// ([local] passwd_file) with the daemon's own uid and temp homes: no dependence on the machine.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { RawSmtp, sendMessage } from '../helpers/smtp-client.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
// The daemon drops root for nobody: the users are that uid, so their .forward runs in-process.
const id = (flag: string) => (isRoot() ? Number(execFileSync('id', [flag, 'nobody'], { encoding: 'utf8' }).trim()) : flag === '-u' ? process.getuid!() : process.getgid!());
const own = (p: string) => isRoot() && fs.chownSync(p, id('-u'), id('-g'));
const FIXED = 'local delivery failed (the reason is for the postmaster)';
const FIXED_FOR_NOW = 'local delivery failed for now; retried later (the reason is for the postmaster)';

/** Words of the recipients' end: none may reach a client. */
const HIDDEN = ['secret-filter', 'filter-output-xyzzy', 'pia-private', 'mda-garply', 'mda-stderr-waldo', 'cannot open', 'bea-hidden', '.forward', 'nobody-frob', 'missing-list-corge', 'ENOENT', 'alias loop', 'exit', '/tmp/'];

/**
 * pia's .forward pipes into a filter that fails for good (67) and says things on stderr; max's
 * MDA fails for good (67); ann and bea forward to each other (a loop); `list` is an alias of
 * nobody here; `staff` includes a list file that is not there (for now).
 */
async function setup(): Promise<{ site: TestSite; homes: string[] }> {
  const home = (name: string) => {
    const h = tmpDir(`tidemail-home-${name}-`);
    own(h);
    return h;
  };
  const [pia, max, ann, bea] = [home('pia'), home('max'), home('ann'), home('bea-hidden')];
  const filter = writeFile(path.join(pia, 'bin', 'secret-filter'), '#!/bin/sh\necho "filter-output-xyzzy at /srv/pia-private" >&2\nexit 67\n', 0o755);
  writeFile(path.join(pia, '.forward'), `"|${filter}"\n`);
  writeFile(path.join(ann, '.forward'), 'bea-hidden@tidemail.test\n');
  writeFile(path.join(bea, '.forward'), 'ann@tidemail.test\n');
  for (const p of [path.join(pia, 'bin'), filter, path.join(pia, '.forward'), path.join(ann, '.forward'), path.join(bea, '.forward')]) own(p);
  const mda = writeFile(path.join(tmpDir('tidemail-mda-'), 'mda-garply'), '#!/bin/sh\necho "mda-stderr-waldo: cannot open /var/mail-garply/$1" >&2\nexit 67\n', 0o755);
  const users = [['pia', pia], ['max', max], ['ann', ann], ['bea-hidden', bea]];
  const passwd = writeFile(path.join(tmpDir(), 'passwd'), users.map(([n, h]) => `${n}:x:${id('-u')}:${id('-g')}:${n}:${h}:/bin/sh\n`).join(''));
  const aliases = writeFile(path.join(tmpDir(), 'aliases'), `list: nobody-frob\nstaff: :include:${tmpDir()}/missing-list-corge\n`);
  const site = await makeSite(`[local]\naliases = "${aliases}"\nforward = true\npasswd_file = "${passwd}"\ndelivery = "mda"\nmda = ["${mda}", "{user}"]\n[queue]\nretry_min = "1h"\n`);
  return { site, homes: [pia, max, ann, bea] };
}

function assertHidden(reply: string, homes: string[]): void {
  for (const hidden of [...HIDDEN, ...homes]) assert.not.ok(reply.includes(hidden), `the client reads ${hidden}: ${reply}`);
}

test('every local recipient failing for good at DATA: the client reads the status and the fixed text; the log and root\'s tidemail log have the reasons', async () => {
  const { site, homes } = await setup();
  const d = keep(await startDaemon(site));
  for (const rcpts of [['pia@tidemail.test'], ['max@tidemail.test'], ['pia@tidemail.test', 'max@tidemail.test']]) {
    const reply = await sendMessage(site.port, 'stranger@remote.example', rcpts, 'Subject: hi\r\n\r\nhi\r\n');
    assert.is(reply, `550 5.1.1 ${FIXED}`, rcpts.join());
    assertHidden(reply, homes);
  }
  // The postmaster has every word: in the log, and in root's history of each refused message.
  await d.waitForLog(/refused in session to=<max@tidemail\.test> result="[^"]*mda-stderr-waldo/);
  const ids = [...d.logs().matchAll(/([0-9A-F]{16}): accepted from=<stranger@remote\.example>/g)].map((m) => m[1]!);
  assert.is(ids.length, 3);
  const history = async (msgid: string) => (await runCli(['log', msgid, '--config', site.configPath])).stdout;
  for (const [msgid, words] of [[ids[0]!, ['filter-output-xyzzy']], [ids[1]!, ['mda-stderr-waldo']], [ids[2]!, ['filter-output-xyzzy', 'mda-stderr-waldo']]] as const) {
    await waitFor(`${words.join(', ')} in root's tidemail log ${msgid}`, async () => {
      const h = await history(msgid);
      return /refused in session/.test(h) && words.every((w) => h.includes(w));
    });
  }
});

test('a local address that cannot be expanded at RCPT: the status and the fixed text, to a stranger and to a local sendmail -bs alike; the log says why', async () => {
  const { site, homes } = await setup();
  const d = keep(await startDaemon(site));
  const expected: [string, string][] = [
    ['ann@tidemail.test', `550 5.4.6 <ann@tidemail.test>: ${FIXED}`],
    ['list@tidemail.test', `550 5.1.1 <list@tidemail.test>: ${FIXED}`],
    ['staff@tidemail.test', `451 4.3.0 <staff@tidemail.test>: ${FIXED_FOR_NOW}`],
    // An unknown user names only the address the client gave: unchanged.
    ['nosuch@tidemail.test', '550 5.1.1 <nosuch@tidemail.test>: Recipient address rejected: User unknown in local recipient table'],
  ];
  const c = await RawSmtp.connect(site.port);
  await c.hello();
  assert.match(await c.cmd('MAIL FROM:<stranger@remote.example>'), /^250 /);
  for (const [rcpt, reply] of expected) {
    const got = await c.cmd(`RCPT TO:<${rcpt}>`);
    assert.is(got, reply);
    assertHidden(got, homes);
  }
  c.close();
  // The reasons, for the postmaster (at RCPT there is no message yet: the log only).
  await d.waitForLog(/local recipient cannot be expanded rcpt=<staff@tidemail\.test> status=4\.3\.0 reason="[^"]*missing-list-corge/);
  assert.match(d.logs(), /local recipient cannot be expanded rcpt=<ann@tidemail\.test> status=5\.4\.6 reason="alias loop: [^"]*bea-hidden/);
  assert.match(d.logs(), /local recipient cannot be expanded rcpt=<list@tidemail\.test> status=5\.1\.1 reason="[^"]*nobody-frob: no such user/);

  // A local client, even the recipient's own uid, gets the same words: sendmail -bs on a pipe.
  const session = ['EHLO me', 'MAIL FROM:<ann@tidemail.test>', ...expected.map(([r]) => `RCPT TO:<${r}>`), 'QUIT', ''].join('\r\n');
  const local = await runCli(['-C', site.configPath, '-bs'], { argv0: 'sendmail', input: session, ...(isRoot() ? { uid: id('-u'), gid: id('-g') } : {}) });
  for (const [, reply] of expected) assert.ok(local.stdout.includes(`${reply}\r\n`), `sendmail -bs: no ${reply}:\n${local.stdout}${local.stderr}`);
  assertHidden(local.stdout, homes);
});

test.run();
