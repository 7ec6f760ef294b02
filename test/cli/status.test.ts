// `tidemail status` with a real daemon and queue: a route whose smarthost does not answer
// (deferred mail, last error), a route whose link is down (mail waiting for it, and why), a POP3
// account that fails — then the same screen with the daemon stopped, read from the database and
// the link detectors directly.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stopAfterEach } from '../helpers/cleanup.js';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { freePort } from '../helpers/ports.js';
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

test.run();
