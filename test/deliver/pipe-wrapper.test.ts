// Pipe routes (a command with sendmail-style args) and wrapper routes (SMTP over a command's
// stdin/stdout), against real processes.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import { stopAfterEach } from '../helpers/cleanup.js';
import * as assert from 'uvu/assert';
import { mailqWhen, makeSite, startDaemon } from '../helpers/daemon.js';
import { waitFor } from '../helpers/ports.js';
import { startSmarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { tmpDir, writeFile } from '../helpers/tmp.js';

const keep = stopAfterEach(test);

/** A fake `uux`: records its argv and stdin, exits with the code in EXIT_CODE_FILE. */
function fakeCommand(dir: string, exitCode: number): string {
  const out = path.join(dir, 'out');
  fs.mkdirSync(out, { mode: 0o777 });
  fs.chmodSync(out, 0o777);
  return writeFile(path.join(dir, 'fake-uux.mjs'), `
import fs from 'node:fs';
const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const n = Date.now() + '-' + process.pid;
// Written aside and renamed, so the test never reads a half-written file.
fs.writeFileSync(${JSON.stringify(out)} + '/.' + n, JSON.stringify({ argv: process.argv.slice(2), body: Buffer.concat(chunks).toString() }));
fs.renameSync(${JSON.stringify(out)} + '/.' + n, ${JSON.stringify(out)} + '/' + n + '.json');
process.stderr.write('fake uux says hi\\n');
process.exit(${exitCode});
`);
}

function readRuns(dir: string): { argv: string[]; body: string }[] {
  const out = path.join(dir, 'out');
  return fs.readdirSync(out).filter((f) => f.endsWith('.json')).map((f) => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')));
}

test('pipe route: the command gets sender and recipients as arguments and the message with LF line ends', async () => {
  const dir = tmpDir();
  const script = fakeCommand(dir, 0);
  const site = await makeSite();
  site.route('uucp', `kind = "pipe"\npipe = ["${process.execPath}", "${script}", "-f", "{sender}", "host!rmail", "{recipients}"]\n`);
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['a@remote.example', 'b@remote.example'], 'Subject: pipe\r\n\r\nline1\r\nline2\r\n');
  const [run] = await waitFor('the pipe to run', () => (readRuns(dir).length ? readRuns(dir) : null));
  assert.equal(run!.argv, ['-f', 'me@tidemail.test', 'host!rmail', 'a@remote.example', 'b@remote.example']);
  assert.match(run!.body, /Subject: pipe\n\nline1\nline2\n$/);
  assert.not.match(run!.body, /\r/);
  await d.waitForLog(/delivered to=<a@remote\.example> route=uucp/);
});

test('pipe route: exit 75 defers, exit 67 bounces with the command\'s words', async () => {
  for (const [code, expect] of [[75, /deferred to=<x@remote\.example>.*exited with 75: fake uux says hi/], [67, /bounced to=<x@remote\.example>.*exited with 67/]] as const) {
    const dir = tmpDir();
    const script = fakeCommand(dir, code);
    const site = await makeSite('[queue]\nretry_min = "1h"');
    site.route('uucp', `kind = "pipe"\npipe = ["${process.execPath}", "${script}", "{recipients}"]\n`);
    const d = keep(await startDaemon(site));
    await sendMessage(site.port, 'me@tidemail.test', ['x@remote.example'], 'Subject: pipe\r\n\r\nx\r\n');
    await d.waitForLog(expect);
    if (code === 75) await mailqWhen(site.configPath, 'the deferred message with its reason', (out) => /fake uux says hi/.test(out) && /x@remote\.example/.test(out));
    else await mailqWhen(site.configPath, 'the bounced message gone', (out) => !/x@remote\.example/.test(out));
  }
});

test('wrapper route: SMTP spoken over a command\'s stdin/stdout reaches the server', async () => {
  const sh = keep(await startSmarthost());
  const site = await makeSite();
  const relay = `const s=require('net').connect(${sh.port},'127.0.0.1');process.stdin.pipe(s);s.pipe(process.stdout);s.on('close',()=>process.exit(0))`;
  site.route('tunnel', `kind = "wrapper"\nwrapper = ${JSON.stringify([process.execPath, '-e', relay])}\ntls = "none"\n`);
  keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['w1@remote.example'], 'Subject: w1\r\n\r\nx\r\n');
  await sendMessage(site.port, 'me@tidemail.test', ['w2@remote.example'], 'Subject: w2\r\n\r\nx\r\n');
  const msgs = await sh.waitForMessages(2);
  assert.equal(msgs.map((m) => m.to[0]).sort(), ['w1@remote.example', 'w2@remote.example']);
});

test('wrapper route: a command that fails defers with its error', async () => {
  const site = await makeSite('[queue]\nretry_min = "1h"');
  site.route('tunnel', `kind = "wrapper"\nwrapper = ["/nonexistent/command", "x"]\n`);
  const d = keep(await startDaemon(site));
  await sendMessage(site.port, 'me@tidemail.test', ['w@remote.example'], 'Subject: w\r\n\r\nx\r\n');
  await d.waitForLog(/deferred to=<w@remote\.example>.*cannot run \/nonexistent\/command/);
});

test.run();
