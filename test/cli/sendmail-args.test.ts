// The sendmail command line: what real callers (cron, mutt, PHP, git send-email, old scripts)
// pass, parsed without the daemon. Unknown legacy options must be tolerated, never fatal.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { SendmailUsageError, parseSendmailArgs } from '../../src/cli/sendmail-args.js';

const p = (...argv: string[]) => parseSendmailArgs(argv);

test('plain invocation: deliver mode, recipients from the arguments, dots end input', () => {
  const a = p('alice@example.org', 'bob');
  assert.is(a.mode, 'deliver');
  assert.equal(a.recipients, ['alice@example.org', 'bob']);
  assert.is(a.extractRecipients, false);
  assert.is(a.ignoreDots, false);
  assert.is(a.sender, undefined);
  assert.is(a.verbose, false);
});

test('-t reads recipients from the header; -i and -oi stop a lone dot from ending input', () => {
  assert.is(p('-t').extractRecipients, true);
  assert.is(p('-t').ignoreDots, false);
  assert.is(p('-i', 'x').ignoreDots, true);
  assert.is(p('-oi', 'x').ignoreDots, true);
  assert.equal(p('-oi', 'x').recipients, ['x']);
});

test('bundled flags: -ti, -it and -tiv', () => {
  for (const flags of ['-ti', '-it']) {
    const a = p(flags);
    assert.is(a.extractRecipients, true, flags);
    assert.is(a.ignoreDots, true, flags);
  }
  const v = p('-tiv');
  assert.ok(v.extractRecipients && v.ignoreDots && v.verbose);
});

test('-f and -r take the sender as the next word or attached', () => {
  assert.is(p('-f', 'me@example.org', 'x').sender, 'me@example.org');
  assert.is(p('-fme@example.org', 'x').sender, 'me@example.org');
  assert.is(p('-r', 'bounce@example.org', 'x').sender, 'bounce@example.org');
  assert.is(p('-rbounce@example.org', 'x').sender, 'bounce@example.org');
  assert.equal(p('-f', 'me@example.org', 'x').recipients, ['x']);
});

test("-f '' and -f '<>' keep the empty / bracketed null sender for the submit step", () => {
  assert.is(p('-f', '', 'x').sender, '');
  assert.is(p('-f', '<>', 'x').sender, '<>');
  assert.equal(p('-f', '', 'x').recipients, ['x']);
});

test('-F sets the full name, with spaces, as one word', () => {
  const a = p('-F', 'Cron Daemon', 'x');
  assert.is(a.fullName, 'Cron Daemon');
  assert.equal(a.recipients, ['x']);
  assert.is(p('-FBackup', 'x').fullName, 'Backup');
});

test('-oem, -oee, -oep, -odb are tolerated and do not eat a recipient', () => {
  for (const o of ['-oem', '-oee', '-oep', '-odb', '-oQ/var/spool/mqueue']) {
    const a = p(o, 'bob@example.org');
    assert.is(a.mode, 'deliver', o);
    assert.equal(a.recipients, ['bob@example.org'], o);
    assert.is(a.ignoreDots, false, o);
    assert.ok(a.ignored.includes(o), `${o} not listed as ignored`);
  }
});

test('-b selects the mode: -bm deliver, -bs smtp, -bp mailq, -bi newaliases', () => {
  assert.is(p('-bm', 'x').mode, 'deliver');
  assert.equal(p('-bm', 'x').recipients, ['x']);
  assert.is(p('-bs').mode, 'smtp');
  assert.is(p('-bp').mode, 'mailq');
  assert.is(p('-bi').mode, 'newaliases');
});

test('-bt and -bv (address test, verify) are usage errors, not silently delivered', () => {
  for (const o of ['-bt', '-bv']) {
    assert.throws(() => p(o, 'x'), (e: unknown) => e instanceof SendmailUsageError && e.message.includes(o));
  }
});

test('-q and -q15m run the queue', () => {
  assert.is(p('-q').mode, 'runq');
  const a = p('-q15m');
  assert.is(a.mode, 'runq');
  assert.equal(a.recipients, []);
});

test('-v sets verbose', () => {
  assert.is(p('-v', 'x').verbose, true);
});

test('-- ends the options: what follows is a recipient even when it starts with a dash', () => {
  const a = p('-i', '--', '-odd@example.org', 'bob@example.org');
  assert.equal(a.recipients, ['-odd@example.org', 'bob@example.org']);
  assert.is(a.ignoreDots, true);
});

test('the first non-option word starts the recipient list', () => {
  const a = p('-i', 'bob@example.org', '-t');
  assert.equal(a.recipients, ['bob@example.org', '-t']);
  assert.is(a.extractRecipients, false);
});

test('unknown legacy options are ignored; their values are not taken for recipients', () => {
  const a = p(
    '-n', '-U', '-Am', '-odb', '-O', 'DeliveryMode=b', '-B', '8BITMIME', '-N', 'never', '-R', 'hdrs',
    '-V', 'envid-1', '-X', '/tmp/smtp.log', '-L', 'tag', '-h', '5', '-oem', 'rcpt@example.org',
  );
  assert.is(a.mode, 'deliver');
  assert.equal(a.recipients, ['rcpt@example.org']);
  assert.is(a.extractRecipients, false);
  assert.is(a.ignoreDots, false);
  assert.is(a.sender, undefined);
  for (const v of ['DeliveryMode=b', '8BITMIME', 'never', 'hdrs', 'envid-1', '/tmp/smtp.log', 'tag', '5']) {
    assert.ok(a.ignored.some((i) => i.endsWith(` ${v}`)), `value ${v} not recorded as ignored: ${a.ignored.join(' | ')}`);
  }
  for (const o of ['-n', '-U', '-Am', '-odb', '-oem']) assert.ok(a.ignored.includes(o), `${o} not recorded as ignored`);
});

test('attached values of legacy options are ignored too (-h5, -Bbody, -NSUCCESS)', () => {
  const a = p('-h5', '-B8BITMIME', '-NSUCCESS,FAILURE', '-Rfull', 'x');
  assert.equal(a.recipients, ['x']);
});

test('-C names the config file', () => {
  assert.is(p('-C', '/etc/x.toml', 'x').configPath, '/etc/x.toml');
  assert.is(p('-C/etc/x.toml', 'x').configPath, '/etc/x.toml');
});

test('an option that needs a value but has none is a usage error', () => {
  assert.throws(() => p('-f'), (e: unknown) => e instanceof SendmailUsageError);
  assert.throws(() => p('-t', '-F'), (e: unknown) => e instanceof SendmailUsageError);
  // After the first recipient, '-F' is just another recipient word.
  assert.equal(p('x', '-F').recipients, ['x', '-F']);
});

test.run();
