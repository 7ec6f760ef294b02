// sendmail's addresses get SMTP's rule for invisible characters (smtp/wire/peer-text.ts): a bidi
// override or zero-width character in -f, -F, a recipient on the command line or in To: (-t) is
// refused with EX_DATAERR (65), as other bad addresses are, and nothing reaches the maildrop. Run
// as local programs call it: from dist/src, and from the bundle that cron's `sendmail` runs.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, type TestSite } from '../helpers/daemon.js';
import { launcherFlags, packageRoot } from '../helpers/package-root.js';
import { cleanupTmp } from '../helpers/tmp.js';

test.after(() => cleanupTmp());

const RLO = '\u202e'; // RIGHT-TO-LEFT OVERRIDE: "moc.knab@" shows as "bank.com@"…
const ZWSP = '\u200b';
const LRI = '\u2066';

const sendmail = (site: TestSite, args: string[], input: string) => runCli(['-C', site.configPath, ...args], { argv0: 'sendmail', input });
const dropped = (site: TestSite) => (fs.existsSync(path.join(site.stateDir, 'maildrop')) ? fs.readdirSync(path.join(site.stateDir, 'maildrop')).filter((n) => !n.startsWith('.')) : []);

/** 65, a message naming the character as U+XXXX, the character itself never written raw to the terminal. */
function assertRefused(r: { code: number | null; stderr: string }, what: RegExp, codePoint: string): void {
  assert.is(r.code, 65, r.stderr);
  assert.match(r.stderr, what);
  assert.ok(r.stderr.includes(`invisible or control character (U+${codePoint})`), r.stderr);
  assert.not.match(r.stderr, /[\u200b-\u200f\u202a-\u202e\u2066-\u2069]/, 'the character reached stderr unescaped');
}

test('-f with a bidi override → 65, nothing queued', async () => {
  const site = await makeSite();
  const r = await sendmail(site, ['-f', `boss${RLO}moc.knab@tidemail.test`, 'x@remote.example'], 'Subject: s\n\nx\n');
  assertRefused(r, /bad sender address <boss\\u202emoc\.knab@tidemail\.test>/, '202E');
  assert.equal(dropped(site), []);
});

test('a recipient on the command line with a zero-width space → 65, nothing queued for anyone', async () => {
  const site = await makeSite();
  const r = await sendmail(site, ['good@remote.example', `pay${ZWSP}pal@remote.example`], 'Subject: s\n\nx\n');
  assertRefused(r, /bad recipient address <pay\\u200bpal@remote\.example>/, '200B');
  assert.equal(dropped(site), []);
});

test('-t: an isolate in To: → 65, nothing queued', async () => {
  const site = await makeSite();
  const r = await sendmail(site, ['-t'], `To: ${LRI}evil@remote.example\nSubject: s\n\nx\n`);
  assertRefused(r, /bad recipient address/, '2066');
  assert.equal(dropped(site), []);
});

test('-F with a bidi override → 65 (it would reorder the From: line a reader sees)', async () => {
  const site = await makeSite();
  const r = await sendmail(site, ['-F', `Support ${RLO}gnikaB`, 'x@remote.example'], 'Subject: s\n\nx\n');
  assertRefused(r, /bad full name \(-F\) "Support \\u202egnikaB"/, '202E');
  assert.equal(dropped(site), []);
});

test('what the rule allows still goes: a joiner inside a Persian name, non-ASCII addresses, an ordinary -F', async () => {
  const site = await makeSite();
  const r = await sendmail(site, ['-F', 'José Müller', '-f', 'jose@tidemail.test', 'نامه\u200cها@remote.example', 'müller@remote.example'], 'Subject: s\n\nx\n');
  assert.is(r.code, 0, r.stderr);
  assert.is(dropped(site).length, 1);
});

test('the sendmail bundle (what cron runs) refuses the same -f, with the same words', async () => {
  const site = await makeSite();
  const root = packageRoot(true);
  const r = spawnSync(process.execPath, [...launcherFlags(root), path.join(root, 'bin', 'tidemail.js'), 'sendmail', '-C', site.configPath, '-f', `a${RLO}b@tidemail.test`, 'x@remote.example'], {
    input: 'Subject: s\n\nx\n', encoding: 'utf8', timeout: 30_000,
  });
  assertRefused({ code: r.status, stderr: r.stderr }, /^sendmail: bad sender address <a\\u202eb@tidemail\.test>/, '202E');
  assert.equal(dropped(site), []);
});

test.run();
