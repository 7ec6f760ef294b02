// sendmail has no long options: `--config FILE` (tidemail's other commands take it) is a usage
// error naming sendmail's -C FILE, not ignored — ignoring it made FILE a recipient and used
// another config. The single-letter legacy options cron, mutt, git send-email and PHP mail()
// pass (-oi, -odq, -U, -t, -i, -f) keep working. Through the real launcher, by both names.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, type TestSite } from '../helpers/daemon.js';
import { cleanupTmp } from '../helpers/tmp.js';
import { parseSendmailArgs } from '../../src/cli/sendmail-args.js';

test.after(() => cleanupTmp());

const queued = (site: TestSite) => {
  const dir = path.join(site.stateDir, 'maildrop');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => !f.startsWith('.')) : [];
};
const noStack = (s: string) => assert.not.match(s, /^\s+at /m, `stack trace:\n${s}`);
const MSG = 'To: root\nSubject: cron\n\nhello\n';

for (const how of ['sendmail', 'tidemail sendmail'] as const) {
  const run = (site: TestSite, args: string[]) => runCli(how === 'sendmail' ? args : ['sendmail', ...args], {
    argv0: how === 'sendmail' ? 'sendmail' : undefined,
    input: MSG,
    // Had the option been ignored, this is the config it would use — never the machine's own.
    env: { TIDEMAIL_CONFIG: site.configPath },
  });

  test(`${how} --config FILE: EX_USAGE (64), names the option and -C FILE; nothing queued`, async () => {
    const site = await makeSite();
    for (const args of [['--config', site.configPath, 'root'], [`--config=${site.configPath}`, 'root']]) {
      const r = await run(site, args);
      assert.is(r.code, 64, r.stderr);
      assert.match(r.stderr, new RegExp(`^${how.split(' ')[0]}: unknown option --config\\S*: use -C FILE`));
      noStack(r.stderr);
    }
    assert.equal(queued(site), []);
  });

  test(`${how} with an unknown long option: EX_USAGE, named; nothing queued`, async () => {
    const site = await makeSite();
    const r = await run(site, ['-C', site.configPath, '--frobnicate', 'root']);
    assert.is(r.code, 64, r.stderr);
    assert.match(r.stderr, /unknown option --frobnicate: sendmail takes single-letter options/);
    assert.equal(queued(site), []);
  });

  test(`${how} -oi -odq -U -t (what cron, mutt and PHP pass): queued, exit 0`, async () => {
    const site = await makeSite();
    const r = await run(site, ['-C', site.configPath, '-oi', '-odq', '-U', '-oem', '-t']);
    assert.is(r.code, 0, r.stderr);
    assert.is(queued(site).length, 1);
  });
}

test('the parser: -- still ends the options; a long option after it is a recipient', () => {
  assert.equal(parseSendmailArgs(['--', '--odd@example.org']).recipients, ['--odd@example.org']);
  assert.throws(() => parseSendmailArgs(['--from', 'a@b', 'c@d']), /unknown option --from: use -f ADDRESS/);
  assert.throws(() => parseSendmailArgs(['-t', '--verbose']), /unknown option --verbose: use -v/);
});

test.run();
