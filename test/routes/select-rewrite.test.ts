// Route choice and rewriting, end to end: per-sender smarthosts, cron/root mail leaving with a
// real From, address maps, Bcc never leaked, priorities, local-only routes.

import { test } from 'uvu';
import { stopAfterEach } from '../helpers/cleanup.js';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon } from '../helpers/daemon.js';
import { sleep } from '../helpers/ports.js';
import { smarthostRoute, startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';

const keep = stopAfterEach(test);

test('each sender domain leaves through its own smarthost; the catch-all takes the rest', async () => {
  const work = keep(await startSmarthost());
  const home = keep(await startSmarthost());
  const site = await makeSite();
  site.route('10-work', smarthostRoute(work.port, 'senders = ["*@work.example"]'));
  site.route('20-home', smarthostRoute(home.port, ''));
  keep(await startDaemon(site));
  await sendMessage(site.port, 'me@work.example', ['x@remote.example'], 'Subject: work\r\n\r\nw\r\n');
  await sendMessage(site.port, 'me@home.example', ['y@remote.example'], 'Subject: home\r\n\r\nh\r\n');
  await work.waitForMessages(1);
  await home.waitForMessages(1);
  assert.equal(work.messages.map((m) => m.from), ['me@work.example']);
  assert.equal(home.messages.map((m) => m.from), ['me@home.example']);
});

test('priority beats file name; not_recipients excludes', async () => {
  const a = keep(await startSmarthost());
  const b = keep(await startSmarthost());
  const site = await makeSite();
  site.route('a', smarthostRoute(a.port, 'priority = 50\nnot_recipients = ["*.internal.example"]'));
  site.route('b', smarthostRoute(b.port, 'priority = 60'));
  keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['p@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sendMessage(site.port, 'me@tidemail.test', ['q@db.internal.example'], 'Subject: 2\r\n\r\nx\r\n');
  await a.waitForMessages(1);
  await b.waitForMessages(1);
  assert.equal(a.messages[0]!.to, ['p@remote.example']);
  assert.equal(b.messages[0]!.to, ['q@db.internal.example']);
});

test('cron mail from root leaves with the configured sender and From; Bcc is not leaked', async () => {
  const sh = keep(await startSmarthost());
  const site = await makeSite();
  site.route('isp', smarthostRoute(sh.port, 'rewrite.envelope_from = "me@isp.example"\nrewrite.header_from = "me@isp.example"\nrewrite.map.alice = "alice@isp.example"'));
  keep(await startDaemon(site));
  // What cron does: sendmail -t with a From: of root and the full name "Cron Daemon".
  const input = 'From: root (Cron Daemon)\nTo: admin@remote.example\nBcc: hidden@remote.example\nSubject: Cron <root@box> run-parts\n\nresult\n';
  const r = await runCli(['-t', '-C', site.configPath], { argv0: 'sendmail', input, env: { USER: 'root' } });
  assert.equal(r.code, 0, r.stderr);
  const [m] = await sh.waitForMessages(1);
  assert.equal(m!.from, 'me@isp.example');
  const text = m!.raw.toString();
  assert.match(text, /^From: (Cron Daemon|"?root"?) <me@isp\.example>\r$/m);
  assert.not.match(text, /hidden@/);
  assert.equal(m!.to.sort(), ['admin@remote.example', 'hidden@remote.example']);
  // An address map wins over the generic rewrite, for envelope and header alike.
  await sendMessage(site.port, 'alice@tidemail.test', ['z@remote.example'], 'From: Alice <alice@tidemail.test>\r\nReply-To: alice\r\nSubject: a\r\n\r\nx\r\n');
  const [, m2] = await sh.waitForMessages(2);
  assert.equal(m2!.from, 'alice@isp.example');
  assert.match(m2!.raw.toString(), /^From: Alice <alice@isp\.example>\r$/m);
  assert.match(m2!.raw.toString(), /^Reply-To: <alice@isp\.example>\r$/m);
  // Foreign senders are never rewritten.
  await sendMessage(site.port, 'bob@elsewhere.example', ['z@remote.example'], 'From: Bob <bob@elsewhere.example>\r\nSubject: b\r\n\r\nx\r\n');
  const [, , m3] = await sh.waitForMessages(3);
  assert.equal(m3!.from, 'bob@elsewhere.example');
  assert.match(m3!.raw.toString(), /^From: Bob <bob@elsewhere\.example>\r$/m);
});

test('a local-only route keeps matching mail in the queue, with the reason', async () => {
  const sh = keep(await startSmarthost());
  const site = await makeSite();
  site.route('00-lan', 'kind = "local-only"\nrecipients = ["*.lan"]\n');
  site.route('isp', smarthostRoute(sh.port));
  keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['printer@office.lan'], 'Subject: lan\r\n\r\nx\r\n');
  await sendMessage(site.port, 'me@tidemail.test', ['x@remote.example'], 'Subject: out\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await sleep(300);
  assert.equal(sh.messages.length, 1);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assert.match(q.stdout, /printer@office\.lan/);
  assert.match(q.stdout, /route 00-lan is offline|local-only/);
});

test.run();
