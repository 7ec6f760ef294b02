// `tidemail status` with a real daemon and queue: a route whose smarthost does not answer
// (deferred mail, last error), a route whose link is down (mail waiting for it, and why), a POP3
// account that fails — then the same screen with the daemon stopped, read from the database and
// the link detectors directly.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { smarthostRoute } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { writeFile, writeSecret } from '../helpers/tmp.js';

const track = stopAfterEach(test);

async function status(site: TestSite): Promise<{ text: string; json: StatusJson }> {
  const t = await runCli(['status', '--config', site.configPath]);
  assert.is(t.code, 0, t.stderr);
  const j = await runCli(['status', '--json', '--config', site.configPath]);
  assert.is(j.code, 0, j.stderr);
  return { text: t.stdout, json: JSON.parse(j.stdout) as StatusJson };
}

interface StatusJson {
  daemon: { running: boolean };
  queue: { messages: number; oldest: number | null };
  byRoute: Record<string, Record<string, number>>;
  routes: { name: string; online: boolean; why?: string; queued?: number }[];
  fetch: { account: string; last: { error?: string } | null }[];
  problems: { event: string; fields: string }[];
}

/** The lines of one route's block in the text screen. */
function routeBlock(text: string, name: string): string {
  const lines = text.split('\n');
  const i = lines.findIndex((l) => new RegExp(`^  ${name}\\s+(ONLINE|offline)`).test(l));
  assert.ok(i >= 0, `route ${name} not in:\n${text}`);
  const out = [lines[i]!];
  for (let j = i + 1; j < lines.length && /^\s{17}\S/.test(lines[j]!); j++) out.push(lines[j]!);
  return out.join('\n');
}

test('status answers the common questions with the daemon up, and again with it down', async () => {
  const closed = await freePort();
  const site = await makeSite('[queue]\nretry_min = "1h"\nretry_max = "2h"');
  const flag = path.join(site.dir, 'work.up');
  const pw = writeSecret(path.join(site.dir, 'secrets', 'pop'), 'pw\n');
  site.route('isp', smarthostRoute(closed, `not_recipients = ["*@work.example"]\n[[fetch]]\nserver = "127.0.0.1:${closed}"\ntls = "none"\nuser = "me"\npassword_file = "${pw}"\ndeliver_to = "root"\n`));
  site.route('work', smarthostRoute(closed, `recipients = ["*@work.example"]\nonline.file = "${flag}"\n`));
  const d = track(await startDaemon(site));
  assert.match(await sendMessage(site.port, 'alice@tidemail.test', ['bob@remote.example'], 'Subject: a\r\n\r\nhi\r\n'), /^250/);
  assert.match(await sendMessage(site.port, 'alice@tidemail.test', ['carol@work.example'], 'Subject: b\r\n\r\nhi\r\n'), /^250/);
  await d.waitForLog(/deferred to=<bob@remote\.example>/);
  await d.waitForLog(/fetch|pop3/i, 10_000).catch(() => undefined);

  // History reaches the events table within 250 ms of the log line (it rides on the next write).
  const problems = /recent problems[^\n]*\n\s+\d+s ago\s+[0-9A-F]{20} deferred\s+to=<bob@remote\.example>/;
  let up = await status(site);
  for (const end = Date.now() + 10_000; !problems.test(up.text) && Date.now() < end; ) up = await status(site);
  assert.match(up.text, /^daemon:\s+running \(pid \d+/m);
  assert.match(up.text, /^queue:\s+2 message\(s\), 2 recipient\(s\).*oldest \d+s ago/m);
  const isp = routeBlock(up.text, 'isp');
  assert.match(isp, /ONLINE/);
  assert.match(isp, /why: always online/);
  assert.match(isp, /1 queued \(1 deferred\)/);
  assert.match(isp, /last error .*: cannot connect to 127\.0\.0\.1:\d+/);
  const work = routeBlock(up.text, 'work');
  assert.match(work, /offline/);
  assert.match(work, new RegExp(`why: file ${flag.replace(/[.]/g, '\\.')}: .*does not exist`));
  assert.match(work, /1 queued \(1 waiting for link\)/);
  assert.match(up.text, /^fetch:\n\s+isp\/me\s+.*FAILING: /m);
  assert.match(up.text, /recent problems[^\n]*\n\s+\d+s ago\s+[0-9A-F]{20} deferred\s+to=<bob@remote\.example>/);
  assert.equal(up.json.byRoute['isp'], { deferred: 1 });
  assert.equal(up.json.byRoute['work'], { 'waiting for link': 1 });
  assert.ok(up.json.fetch[0]?.last?.error, JSON.stringify(up.json.fetch));

  await d.stop();
  const down = await status(site);
  assert.match(down.text, /^daemon:\s+NOT running .*start it/m);
  assert.is(down.json.daemon.running, false);
  assert.is(down.json.queue.messages, 2);
  assert.match(routeBlock(down.text, 'isp'), /ONLINE[\s\S]*1 queued \(1 deferred\)/);
  assert.match(routeBlock(down.text, 'work'), /offline[\s\S]*does not exist[\s\S]*1 queued \(1 waiting for link\)/);
  assert.match(down.text, /^fetch:\n\s+isp\/me\s+daemon not running/m);
  assert.match(down.text, /deferred\s+to=<bob@remote\.example>/);
  // …and `tidemail log` says the same about the waiting message.
  const log = await runCli(['log', 'bob@remote.example', '--config', site.configPath]);
  assert.is(log.code, 0, log.stderr);
  assert.match(log.stdout, /=> <bob@remote\.example> still queued \(1 attempt\(s\), next .*; last error: cannot connect to 127\.0\.0\.1:\d+/);
  // The link detectors are asked by status itself: the flag file appears, the route is online.
  writeFile(flag, '');
  const later = await status(site);
  assert.match(routeBlock(later.text, 'work'), /ONLINE[\s\S]*why: file .* exists/);
  assert.ok(later.json.routes.find((r) => r.name === 'work')?.online);
});

test('status before the daemon ever ran creates nothing and says the queue is empty', async () => {
  const site = await makeSite();
  const s = await status(site);
  assert.match(s.text, /NOT running/);
  assert.match(s.text, /^queue:\s+0 message\(s\)/m);
  assert.match(s.text, /^routes:\s+none/m);
  assert.not.ok(fs.existsSync(site.stateDir), 'status created the state dir');
});

test('status tells the truth: reasons add up, an ONLINE link shows the failing delivery, mailrm clears problems, the maildrop counts with the daemon down', async () => {
  const dead = await freePort();
  // The link probe answers (a listener of the test's own), but the smarthost refuses.
  const probe = net.createServer((s) => s.destroy());
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  probe.unref();
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('isp', `smarthost = "127.0.0.1:${dead}"\ntls = "none"\nonline.tcp = "127.0.0.1:${(probe.address() as net.AddressInfo).port}"\n`);
  const d = track(await startDaemon(site));
  await sendMessage(site.port, 'a@tidemail.test', ['x@remote.example', 'y@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sendMessage(site.port, 'a@tidemail.test', ['z@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await d.waitForLog(/deferred to=<z@remote\.example>/, 30_000).catch((e: Error) => assert.unreachable(`${e.message}\n${d.logs()}`));
  await d.waitForLog(/deferred to=<y@remote\.example>/);
  let { text } = await status(site);
  // One line per reason, and the counts add up to the recipients in the headline.
  const total = Number(/(\d+) recipient\(s\), \d+ on hold/.exec(text)![1]);
  const lines = [...text.matchAll(/^ +(\d+) recipient\(s\): /gm)].map((m) => Number(m[1]));
  assert.is(lines.reduce((a, b) => a + b, 0), total, text);
  assert.not.match(text, /not routed yet:/);
  // The link answers (our own port), but deliveries are refused: said beside the reason.
  assert.match(text, /why: .*reachable — but the last delivery failed \d+s ago: .*ECONNREFUSED/);
  const ids = [...new Set([...d.logs().matchAll(/([0-9A-F]{16}): accepted/g)].map((m) => m[1]!))];
  // Events reach the history in batches: wait for them rather than sleep.
  ({ text } = await waitForStatus(site, (t) => /recent problems/.test(t)));
  assert.match(text, /recent problems/, text);
  for (const id of ids) assert.is((await runCli(['mailrm', id, '--config', site.configPath])).code, 0);
  ({ text } = await waitForStatus(site, (t) => !/recent problems/.test(t)));
  assert.not.match(text, /recent problems/);

  await d.stop();
  const r = await runCli(['-C', site.configPath, 'w@remote.example'], { argv0: 'sendmail', input: 'Subject: later\n\nx\n' });
  assert.is(r.code, 0, r.stderr);
  ({ text } = await status(site));
  assert.match(text, /maildrop: 1 message\(s\) from sendmail wait for the daemon .*not running/);
  probe.close();
});

test('status says when refused maildrop files are set aside (.bad-*), and how many', async () => {
  const site = await makeSite();
  const drop = path.join(site.stateDir, 'maildrop');
  fs.mkdirSync(drop, { recursive: true, mode: 0o1733 });
  let s = await status(site);
  assert.not.match(s.text, /set aside/);
  for (const n of ['.bad-000000000000000000000001', '.bad-.hidden', '.who-00000000000000000000000000000000']) fs.writeFileSync(path.join(drop, n), 'x');
  s = await status(site);
  assert.ok(s.text.includes(`maildrop: 2 refused file(s) set aside as .bad-* in ${drop} (the daemon's log says why: "maildrop: refused"); removed after 7 days`), s.text);
  assert.is((s.json as unknown as { maildropSetAside: number }).maildropSetAside, 2);
});

test("a fetch account's error is shown escaped: a line break in it cannot fake a line of status", async () => {
  const closed = await freePort();
  const site = await makeSite();
  // The error names the password file; its name carries a line break and a fake status line.
  const pw = path.join(site.dir, 'pop\nqueue: 0 message(s) FAKE');
  fs.writeFileSync(pw, 'pw\n', { mode: 0o600 });
  site.route('isp', smarthostRoute(closed, `[[fetch]]\nserver = "127.0.0.1:${closed}"\ntls = "none"\nuser = "me"\npassword_file = ${JSON.stringify(pw)}\ndeliver_to = "root"\n`));
  track(await startDaemon(site));
  // Readable by others once running (the start refuses that): the next fetch fails naming it.
  fs.chmodSync(pw, 0o644);
  const f = await runCli(['fetch', 'isp/me', '--config', site.configPath]);
  const { text } = await waitForStatus(site, (t) => /FAKE/.test(t));
  assert.match(text, /FAKE/, `${f.stdout}${f.stderr}`);
  assert.match(text, /FAILING: .*pop\\x0aqueue: 0 message\(s\) FAKE/, text);
  assert.not.match(text, /^queue: 0 message\(s\) FAKE is readable/m, text);
});

/** The status text once `ok` holds (or the last one after 10 s: the caller's assertion says why). */
async function waitForStatus(site: TestSite, ok: (t: string) => boolean): Promise<{ text: string }> {
  let text = '';
  await waitFor('status', async () => ok((text = (await status(site)).text)), 10_000, 100).catch(() => undefined);
  return { text };
}

test.run();
