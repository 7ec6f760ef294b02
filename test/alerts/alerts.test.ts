// [alerts] through the real daemon: a smarthost that refuses connections, a POP3 account whose
// server is not there, a command (node writing what it got to a file) and a local HTTP listener.
// One alert per condition after its threshold, none again within `repeat`, a cleared notice when
// the route delivers; a failing POST is logged once and not retried; the bearer token comes from
// a 0600 file and appears in no log or status output.

import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { freePort, waitFor } from '../helpers/ports.js';
import { startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, tmpDir, writeFile, writeSecret } from '../helpers/tmp.js';

const TOKEN = 'tok-9f3c1e77d2ab';

interface Post {
  auth: string | undefined;
  body: { kind: string; subject: string; state: string; message: string; host: string };
}

async function listener(status: number): Promise<{ port: number; posts: Post[]; close(): Promise<void> }> {
  const posts: Post[] = [];
  const server = http.createServer((req, res) => {
    let b = '';
    req.on('data', (d) => (b += d));
    req.on('end', () => {
      posts.push({ auth: req.headers.authorization, body: JSON.parse(b) });
      res.writeHead(status).end();
    });
  });
  const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
  return { port, posts, close: () => new Promise((r) => server.close(() => r())) };
}

/** A command that appends what it was given (stdin JSON, TIDEMAIL_ALERT_* variables, its uid) to a file. */
function recorder(): { argv: string[]; records(): { stdin: { kind: string; subject: string; state: string; message: string }; env: Record<string, string>; uid: number }[] } {
  const dir = tmpDir();
  fs.chmodSync(dir, 0o777); // the daemon runs it as its own user (nobody under root)
  const out = path.join(dir, 'alerts.jsonl');
  const script = writeFile(path.join(dir, 'record.mjs'), `import fs from 'node:fs';
let s = ''; process.stdin.on('data', (d) => (s += d)); process.stdin.on('end', () => {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('TIDEMAIL_ALERT_')));
  fs.appendFileSync(${JSON.stringify(out)}, JSON.stringify({ stdin: JSON.parse(s), env, uid: process.getuid() }) + '\\n');
});\n`);
  return {
    argv: [process.execPath, script],
    records: () => (fs.existsSync(out) ? fs.readFileSync(out, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []),
  };
}

const deferrals = (d: RunningDaemon) => d.logs().match(/: deferred to=/g)?.length ?? 0;

test('route failing and fetch FAILING: one alert each by command and POST, none again within repeat, cleared when it delivers; status shows the last', async () => {
  const http200 = await listener(200);
  const cmd = recorder();
  const ispPort = await freePort();
  const deadPop = await freePort();
  const token = writeSecret(path.join(tmpDir(), 'alert-token'), TOKEN + '\n');
  const pw = writeSecret(path.join(tmpDir(), 'pop-pw'), 'pop-secret');
  const site = await makeSite(`[queue]\nretry_min = "1s"\nretry_max = "1s"\n[alerts]\nroute_failing = "2s"\nfetch_failing = "0s"\nrepeat = "1h"\ninterval = "1s"\ncommand = ${JSON.stringify(cmd.argv)}\nurl = "http://127.0.0.1:${http200.port}/hook"\ntoken_file = "${token}"\n`);
  site.route('isp', `smarthost = "127.0.0.1:${ispPort}"\ntls = "none"\n[[fetch]]\nserver = "127.0.0.1:${deadPop}"\ntls = "none"\nuser = "me"\npassword_file = "${pw}"\ndeliver_to = "root"\n`);
  let d: RunningDaemon | null = null;
  let isp: Smarthost | null = null;
  try {
    d = await startDaemon(site);
    assert.match(await sendMessage(site.port, 'alice@tidemail.test', ['bob@remote.example'], 'Subject: hi\r\n\r\nhello\r\n'), /^250/);
    const fired = await waitFor('both alerts', () => {
      const r = cmd.records();
      return r.some((x) => x.stdin.kind === 'route-failing') && r.some((x) => x.stdin.kind === 'fetch-failing') ? r : null;
    }, 20_000, 100);
    const route = fired.find((x) => x.stdin.kind === 'route-failing')!;
    assert.is(route.stdin.state, 'firing');
    assert.is(route.stdin.subject, 'isp');
    assert.match(route.stdin.message, /route isp: no delivery has worked for \d+s; last error: .*ECONNREFUSED/, route.stdin.message);
    assert.is(route.env.TIDEMAIL_ALERT_KIND, 'route-failing');
    assert.is(route.env.TIDEMAIL_ALERT_STATE, 'firing');
    assert.is(route.env.TIDEMAIL_ALERT_SUBJECT, 'isp');
    if (process.getuid?.() === 0) assert.is.not(route.uid, 0, 'the command runs as the daemon user, not root');
    const fetch = fired.find((x) => x.stdin.kind === 'fetch-failing')!;
    assert.is(fetch.stdin.subject, 'isp/me');
    assert.match(fetch.stdin.message, /fetch isp\/me FAILING: /);
    // The same alerts by POST, with the token from the file.
    await waitFor('two POSTs', () => (http200.posts.length >= 2 ? true : null), 10_000, 50);
    assert.ok(http200.posts.every((p) => p.auth === `Bearer ${TOKEN}`));
    assert.equal(new Set(http200.posts.map((p) => p.body.kind)), new Set(['route-failing', 'fetch-failing']));

    // Several more failed attempts (a tick each second) bring no second alert: repeat is 1h.
    const n = deferrals(d);
    await waitFor('three more deferrals', () => (deferrals(d!) >= n + 3 ? true : null), 20_000, 100);
    assert.is(cmd.records().filter((x) => x.stdin.kind === 'route-failing').length, 1);
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /alerts:\n[\s\S]*FIRING route-failing isp since/);

    // A new token in the file is used from the next POST on, without a reload.
    fs.writeFileSync(token, 'tok-rotated-55\n');
    // The smarthost comes up: the mail goes, the route's alert clears (once).
    isp = await startSmarthost({ port: ispPort });
    await isp.waitForMessages(1, 20_000);
    const cleared = await waitFor('the cleared notice', () => cmd.records().find((x) => x.stdin.kind === 'route-failing' && x.stdin.state === 'cleared') ?? null, 20_000, 100);
    assert.match(cleared.stdin.message, /^cleared after \d+s: route isp/);
    const clearedPost = await waitFor('the cleared POST', () => http200.posts.find((p) => p.body.state === 'cleared'), 10_000, 50);
    assert.is(clearedPost.auth, 'Bearer tok-rotated-55');
    const st2 = await runCli(['status', '--config', site.configPath]);
    assert.match(st2.stdout, /last: cleared route-failing isp \d+s ago — command ok \(exit 0\), url ok \(HTTP 200\)/);
    assert.not.match(st2.stdout, /FIRING route-failing/);
    assert.match(st2.stdout, /FIRING fetch-failing isp\/me/);
    // The token is nowhere but the Authorization header.
    const show = await runCli(['config', 'show', '--config', site.configPath]);
    for (const text of [d.logs(), st.stdout, st2.stdout, show.stdout, show.stderr]) assert.not.ok(text.includes(TOKEN), 'token leaked');
  } finally {
    await d?.stop();
    await isp?.close();
    await http200.close();
  }
});

test('a POST that fails is logged once and not retried in a loop', async () => {
  const http503 = await listener(503);
  const dead = await freePort();
  // Owned by whoever runs the test (root in CI) and 0600: the daemon reads it before dropping root.
  const token = writeFile(path.join(tmpDir(), 'root-token'), 'tok-root-only\n', 0o600);
  const site = await makeSite(`[queue]\nretry_min = "1s"\nretry_max = "1s"\n[alerts]\nroute_failing = "1s"\nrepeat = "1h"\ninterval = "1s"\nurl = "http://127.0.0.1:${http503.port}/hook"\ntoken_file = "${token}"\n`);
  site.route('isp', `smarthost = "127.0.0.1:${dead}"\ntls = "none"\n`);
  let d: RunningDaemon | null = null;
  try {
    d = await startDaemon(site);
    assert.match(await sendMessage(site.port, 'alice@tidemail.test', ['bob@remote.example'], 'Subject: hi\r\n\r\nhello\r\n'), /^250/);
    await d.waitForLog(/alert action failed.*action=url.*HTTP 503/, 20_000);
    const n = deferrals(d);
    await waitFor('four more deferrals', () => (deferrals(d!) >= n + 4 ? true : null), 20_000, 100);
    assert.is(http503.posts.length, 1, 'one POST');
    assert.is(http503.posts[0]!.auth, 'Bearer tok-root-only');
    assert.not.match(d.logs(), /tok-root-only/);
    assert.is(d.logs().match(/alert action failed/g)?.length, 1, 'logged once');
    assert.match(d.logs(), /alert action failed.*retry="at the next repeat \(1h\)"/);
    const st = await runCli(['status', '--config', site.configPath]);
    assert.match(st.stdout, /last: firing route-failing isp \d+s ago — url FAILED \(HTTP 503\)/);
  } finally {
    await d?.stop();
    await http503.close();
  }
});

test('config errors name file:line and the fix; the token file must be 0600 and never over plain http', async () => {
  const run = async (toml: string) => {
    const site = await makeSite(toml);
    const r = await runCli(['config', 'check', '--config', site.configPath]);
    return { code: r.code, out: r.stdout + r.stderr, file: site.configPath };
  };
  let r = await run('[alerts]\nroute_failing = "1h"\n');
  assert.is(r.code, 78);
  assert.match(r.out, /:\d+:\d+: 'alerts' has no action\n\s+fix: add command = /);
  r = await run('[alerts]\nurl = "https://ntfy.example/t"\n');
  assert.match(r.out, /'alerts' watches nothing[\s\S]*fix: add at least one of mail_waiting/);
  r = await run('[alerts]\nroute_failing = 30\nurl = "https://ntfy.example/t"\n');
  assert.match(r.out, /'alerts\.route_failing' is 30, a number without a unit/);
  r = await run('[alerts]\nroute_failing = "1h"\ncommand = ["notify-send"]\n');
  assert.match(r.out, /'alerts\.command' "notify-send" is not an absolute path/);
  const loose = writeFile(path.join(tmpDir(), 'token'), TOKEN, 0o644);
  r = await run(`[alerts]\nroute_failing = "1h"\nurl = "https://ntfy.example/t"\ntoken_file = "${loose}"\n`);
  assert.match(r.out, /'alerts\.token_file' file .* is readable by others \(mode 644\)[\s\S]*fix: chmod 600/);
  const missing = path.join(tmpDir(), 'nope');
  r = await run(`[alerts]\nroute_failing = "1h"\nurl = "https://ntfy.example/t"\ntoken_file = "${missing}"\n`);
  assert.match(r.out, /does not exist[\s\S]*fix: create it \(mode 0600\) with the secret on one line: \(umask 077; set -C; cat > /);
  const good = writeSecret(path.join(tmpDir(), 'token'), TOKEN);
  r = await run(`[alerts]\nroute_failing = "1h"\nurl = "http://alerts.example/t"\ntoken_file = "${good}"\n`);
  assert.match(r.out, /'alerts\.url' is http:\/\/ while token_file is set/);
  r = await run('[alerts]\nroute_failing = "1h"\nurl = "https://user:pw@ntfy.example/t"\n');
  assert.match(r.out, /carries a user name or password/);
  for (const x of [r.out]) assert.not.ok(x.includes(TOKEN));
});

test.after(() => cleanupTmp());
test.run();
