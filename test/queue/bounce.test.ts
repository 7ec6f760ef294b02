// The DSNs a sender gets (src/queue/bounce.ts), through the real daemon and a smarthost that
// records every byte: for a local recipient they say the status and that local delivery failed,
// never what the recipient's ~/.forward does (its pipe command and output, its files, the
// addresses it forwards to) nor their MDA's words or paths — the bounce, the delay warning and
// the expiry bounce alike. A remote server's reply reaches the sender word for word. The users
// come from a passwd-format file ([local] passwd_file) with the daemon's own uid and temp homes,
// so nothing depends on the machine's accounts; the log keeps the real reasons. The [local]
// archive copy, not a recipient the sender gave, gets no DSN at all.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { isRoot, tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);
// The daemon drops root for nobody: the users are that uid, so their .forward runs in-process.
const id = (flag: string) => (isRoot() ? Number(execFileSync('id', [flag, 'nobody'], { encoding: 'utf8' }).trim()) : flag === '-u' ? process.getuid!() : process.getgid!());

/** A home owned by the daemon's uid, with `forward` as its ~/.forward when given. */
function home(name: string, forward?: string[]): string {
  const h = tmpDir(`tidemail-home-${name}-`);
  if (forward) writeFile(path.join(h, '.forward'), forward.join('\n') + '\n');
  return h;
}
const own = (p: string) => isRoot() && fs.chownSync(p, id('-u'), id('-g'));

test('a local recipient\'s DSN says the status, not the .forward pipe, its output, the file, the forward target or the MDA\'s stderr', async () => {
  const sh = keep(await startSmarthost({ rcptReply: (a) => (a.startsWith('gone@') ? '550 5.1.1 <gone@remote.example>: remote-words mailbox unknown here' : null) }));
  // pia pipes (the filter fails, 67) and forwards outside; fay saves to a file in a read-only
  // dir (EACCES: for now); mo's MDA says 75 (for now), max's 67 (for good).
  const pia = home('pia');
  const filter = writeFile(path.join(pia, 'bin', 'secret-filter'), '#!/bin/sh\necho "filter-output-xyzzy at /srv/pia-private" >&2\nexit 67\n', 0o755);
  writeFile(path.join(pia, '.forward'), `fwd-target-plugh@elsewhere.example\n"|${filter}"\n`);
  const fay = home('fay');
  const ro = path.join(fay, 'readonly-box');
  fs.mkdirSync(ro, { mode: 0o555 });
  writeFile(path.join(fay, '.forward'), `${ro}/saved-mail-qux\n`);
  const [mo, max] = [home('mo'), home('max')];
  for (const h of [pia, path.join(pia, 'bin'), filter, path.join(pia, '.forward'), fay, ro, path.join(fay, '.forward'), mo, max]) own(h);
  const bin = tmpDir('tidemail-mda-');
  const mda = writeFile(path.join(bin, 'mda-garply'), '#!/bin/sh\necho "mda-stderr-waldo: cannot open /var/mail-garply/$1" >&2\n[ "$1" = mo ] && exit 75\nexit 67\n', 0o755);
  const users = [['pia', pia], ['fay', fay], ['mo', mo], ['max', max]];
  const passwd = writeFile(path.join(tmpDir(), 'passwd'), users.map(([n, h]) => `${n}:x:${id('-u')}:${id('-g')}:${n}:${h}:/bin/sh\n`).join(''));
  const site = await makeSite(
    `[local]\nforward = true\npasswd_file = "${passwd}"\ndelivery = "mda"\nmda = ["${mda}", "{user}"]\narchive = "${ro}/archive-thud"\n` +
      `[queue]\nretry_min = "1s"\nretry_max = "1s"\ndelay_warning = "1s"\nmax_lifetime = "3s"\n`,
  );
  site.route('isp', smarthostRoute(sh.port));
  const d = keep(await startDaemon(site));
  const rcpts = ['pia', 'fay', 'mo', 'max'].map((u) => `${u}@tidemail.test`);
  const reply = await sendMessage(site.port, 'stranger@remote.example', [...rcpts, 'gone@remote.example', 'ok@remote.example'], 'Subject: hello\r\nMessage-ID: <orig@remote.example>\r\n\r\nhi\r\n');
  assert.match(reply, /^250 /);

  // The first bounce (pia, max, gone), the delay warning (fay, mo), the expiry bounce (fay, mo);
  // none for the [local] archive copy, which cannot be written either (its path is ours).
  await d.waitForLog(/dropped: no DSN for the \[local\] archive copy/, 20_000);
  const dsns = () => sh.messages.filter((m) => m.from === '').map((m) => m.raw.toString('utf8'));
  const all = await waitFor('the bounces, the delay warning and the expiry bounce', () => {
    const t = dsns().join('\n');
    return /Action: delayed/.test(t) && /expired/.test(t) && rcpts.every((r) => t.includes(`Final-Recipient: rfc822; ${r}`)) && t.includes('gone@remote.example') ? t : null;
  }, 20_000).catch((err: Error) => {
    throw new Error(`${err.message}:\n${dsns().join('\n----\n')}\n${d.logs()}`);
  });
  assert.ok(sh.messages.filter((m) => m.from === '').every((m) => m.to.join() === 'stranger@remote.example'));
  for (const hidden of ['plugh', 'elsewhere.example', 'secret-filter', 'filter-output-xyzzy', 'pia-private', 'readonly-box', 'saved-mail-qux', 'archive-thud', 'EACCES', 'mda-garply', 'mda-stderr-waldo', pia, fay, mo, bin]) {
    assert.not.ok(all.includes(hidden), `a DSN names ${hidden}:\n${all}`);
  }
  const generic = '(the reason is for the postmaster)';
  for (const [who, action, status] of [['pia', 'failed', '5.1.1'], ['max', 'failed', '5.1.1'], ['fay', 'delayed', '4.2.0'], ['mo', 'delayed', '4.3.0'], ['fay', 'failed', '4.4.7'], ['mo', 'failed', '4.4.7']] as const) {
    const field = new RegExp(`Final-Recipient: rfc822; ${who}@tidemail\\.test\\r\\nAction: ${action}\\r\\nStatus: ${status.replaceAll('.', '\\.')}\\r\\nDiagnostic-Code: smtp; ([^\\r]*)\\r\\n`);
    const m = field.exec(all);
    assert.ok(m, `no ${action} ${status} for ${who}:\n${all}`);
    assert.ok(m![1]!.includes(`local delivery failed${action === 'delayed' ? ' for now; retried later' : ''} ${generic}`), m![1]);
    // The human part says the same.
    assert.ok(all.includes(`<${who}@tidemail.test>: ${m![1]}`), `human part for ${who}`);
  }
  assert.match(all, /<mo@tidemail\.test>: message expired after 3s in the queue; last error: 4\.3\.0 local delivery failed \(the reason/);
  // A remote server's reply is the sender's to read, word for word, with its host.
  assert.match(all, /Final-Recipient: rfc822; gone@remote\.example\r\nAction: failed\r\nStatus: 5\.1\.1\r\nRemote-MTA: dns; [^\r]+\r\nDiagnostic-Code: smtp; 550 5\.1\.1 <gone@remote\.example>: remote-words mailbox unknown here/);

  // The postmaster still has every reason: in the log and in root's `tidemail log`.
  const [, msgid] = /([0-9A-F]{16}): accepted from=<stranger@remote\.example>/.exec(d.logs())!;
  const root = (await runCli(['log', msgid!, '--config', site.configPath])).stdout;
  for (const shown of ['filter-output-xyzzy', 'saved-mail-qux', 'mda-stderr-waldo', 'fwd-target-plugh@elsewhere.example']) assert.ok(root.includes(shown), `root's log lacks ${shown}:\n${root}`);
});

test.run();
