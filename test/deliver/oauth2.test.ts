// OAuth2 smarthost logins, end to end: the real daemon, a token endpoint on loopback and an
// smtp-server smarthost that takes XOAUTH2 and OAUTHBEARER.

import fs from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeSite, runCli, startDaemon, type TestSite } from '../helpers/daemon.js';
import { startOAuthSmarthost, type OAuthSmarthost } from '../helpers/oauth-smarthost.js';
import { sleep, waitFor } from '../helpers/ports.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { cleanupTmp, isRoot, writeSecret } from '../helpers/tmp.js';
import { startTokenEndpoint, type TokenEndpoint } from '../helpers/token-endpoint.js';

const running: { stop(): Promise<unknown> }[] = [];
const track = <T>(x: T, stop: (x: T) => Promise<unknown>): T => {
  running.push({ stop: () => stop(x) });
  return x;
};
test.after.each(async () => {
  for (const r of running.splice(0).reverse()) await r.stop();
});
test.after(() => cleanupTmp());

const USER = 'me@example.test';

interface Setup {
  site: TestSite;
  sh: OAuthSmarthost;
  ep: TokenEndpoint;
  refreshFile: string;
  secretsDir: string;
}

async function setup(opts: { mechanism?: string; accept?: (token: string) => boolean; refusal?: (token: string, user: string) => string; respond?: TokenEndpoint['respond']; siteToml?: string } = {}): Promise<Setup> {
  const ep = track(await startTokenEndpoint(opts.respond), (x) => x.close());
  const sh = track(await startOAuthSmarthost({ accept: opts.accept, refusal: opts.refusal }), (x) => x.close());
  const site = await makeSite(opts.siteToml ?? '');
  const secretsDir = path.join(site.dir, 'secrets');
  const refreshFile = writeSecret(path.join(secretsDir, 'gmail.token'), 'rt-1\n');
  const clientSecret = writeSecret(path.join(secretsDir, 'gmail.client'), 'client-secret-1\n');
  site.route(
    'gmail',
    `smarthost = "127.0.0.1:${sh.port}"
tls = "none"
allow_plain_auth = true
messages_per_connection = 1
auth.user = "${USER}"
auth.oauth2.mechanism = "${opts.mechanism ?? 'XOAUTH2'}"
auth.oauth2.token_url = "${ep.url}"
auth.oauth2.client_id = "client-1.apps.example"
auth.oauth2.client_secret_file = "${clientSecret}"
auth.oauth2.refresh_token_file = "${refreshFile}"
auth.oauth2.scope = "https://mail.google.com/"
`,
  );
  return { site, sh, ep, refreshFile, secretsDir };
}

async function daemon(site: TestSite) {
  return track(await startDaemon(site), (d) => d.stop());
}

/** The daemon's user owns what it writes: nobody when the tests run as root. */
function giveToDaemon(dir: string): void {
  if (isRoot()) fs.chownSync(dir, 65534, 65534);
}

test('XOAUTH2: delivers, and one access token serves several connections', async () => {
  const { site, sh, ep } = await setup();
  await daemon(site);
  for (let i = 0; i < 3; i++) await sendMessage(site.port, 'a@tidemail.test', [`r${i}@remote.example`], `Subject: ${i}\r\n\r\nx\r\n`);
  const msgs = await sh.waitForMessages(3);
  assert.ok(msgs.every((m) => m.user === USER));
  assert.equal(sh.auths.map((a) => [a.method, a.user, a.token]), [['XOAUTH2', USER, 'at-1'], ['XOAUTH2', USER, 'at-1'], ['XOAUTH2', USER, 'at-1']]);
  assert.equal(new Set(sh.auths.map((a) => a.session)).size, 3, 'messages_per_connection = 1: one login per connection');
  assert.equal(ep.requests.length, 1, 'the access token should be fetched once');
  const r = ep.requests[0]!;
  assert.equal(r.method, 'POST');
  assert.match(r.contentType, /^application\/x-www-form-urlencoded/);
  assert.equal(r.form, {
    grant_type: 'refresh_token',
    client_id: 'client-1.apps.example',
    refresh_token: 'rt-1',
    client_secret: 'client-secret-1',
    scope: 'https://mail.google.com/',
  });
});

test('OAUTHBEARER (RFC 7628): delivers with the gs2 header naming the user', async () => {
  const { site, sh, ep } = await setup({ mechanism: 'OAUTHBEARER' });
  await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['o@remote.example'], 'Subject: ob\r\n\r\nx\r\n');
  const [m] = await sh.waitForMessages(1);
  assert.equal(m!.user, USER);
  assert.equal(sh.auths.map((a) => [a.method, a.user, a.token]), [['OAUTHBEARER', USER, 'at-1']]);
  assert.equal(ep.requests.length, 1);
});

test('a token within 60 s of expiry is refreshed on its next use', async () => {
  // expires_in 61: the 60 s margin makes the token due for refresh one second after it came.
  const { site, sh, ep } = await setup({ respond: (_f, n) => ({ status: 200, json: { access_token: `at-${n}`, expires_in: 61 } }) });
  await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['e1@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await sleep(1200);
  await sendMessage(site.port, 'a@tidemail.test', ['e2@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await sh.waitForMessages(2);
  assert.equal(sh.auths.map((a) => a.token), ['at-1', 'at-2']);
  assert.equal(ep.requests.length, 2);
});

test('an access token the server refuses is refreshed once and offered again on the same connection', async () => {
  // Revoked early (e.g. a password change): the cached token looks valid but is not.
  const { site, sh, ep } = await setup({ accept: (t) => t === 'at-2' });
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['s@remote.example'], 'Subject: stale\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  assert.equal(sh.auths.map((a) => [a.token, a.accepted]), [['at-1', false], ['at-2', true]]);
  assert.equal(sh.auths[0]!.session, sh.auths[1]!.session, 'the retry should use the same connection');
  assert.equal(ep.requests.length, 2);
  await d.waitForLog(/delivered to=<s@remote\.example>/);
});

test('a server that refuses even a fresh token defers the mail and says what to check', async () => {
  const { site, sh, ep } = await setup({ accept: () => false, siteToml: '[queue]\nretry_min = "1h"' });
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['n@remote.example'], 'Subject: no\r\n\r\nx\r\n');
  await d.waitForLog(/smarthost login failed .*refused a freshly issued access token: 535/);
  await d.waitForLog(/deferred to=<n@remote\.example>/);
  assert.equal(sh.auths.length, 2, 'one retry, not more');
  assert.equal(ep.requests.length, 2);
  assert.not.match(d.logs(), /bounce/);
});

test('a server echoing the access token and the XOAUTH2 blob in its 535: the log and mailq say [redacted]', async () => {
  const blob = (t: string, u: string) => Buffer.from(`user=${u}\x01auth=Bearer ${t}\x01\x01`).toString('base64');
  const { site } = await setup({ accept: () => false, refusal: (t, u) => `5.7.8 bad token ${t} in ${blob(t, u)}`, siteToml: '[queue]\nretry_min = "1h"' });
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['e@remote.example'], 'Subject: echo\r\n\r\nx\r\n');
  await d.waitForLog(/deferred to=<e@remote\.example>.*535 5\.7\.8 bad token \[redacted\] in \[redacted\]/);
  const q = await runCli(['mailq', '--config', site.configPath]);
  const all = `${d.logs()}\n${q.stdout}`;
  for (const secret of ['at-1', 'at-2', blob('at-1', USER), blob('at-2', USER)]) assert.not.ok(all.includes(secret), `${secret} shown`);
});

test('a revoked refresh token (invalid_grant) defers with an actionable log line; nothing bounces', async () => {
  const { site, sh, ep, refreshFile } = await setup({
    respond: () => ({ status: 400, json: { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' } }),
    siteToml: '[queue]\nretry_min = "1h"',
  });
  const d = await daemon(site);
  const reply = await sendMessage(site.port, 'sender@remote.example', ['v@remote.example'], 'Subject: revoked\r\n\r\nx\r\n');
  assert.match(reply, /^250 /);
  const line = (await d.waitForLog(/^.*smarthost login failed.*$/m))[0];
  assert.ok(line.includes(`the refresh token in ${refreshFile} was revoked or expired (invalid_grant: Token has been expired or revoked.)`), line);
  assert.ok(line.includes(`write the new refresh token to ${refreshFile}`), line);
  await d.waitForLog(/deferred to=<v@remote\.example>/);
  assert.equal(sh.auths.length, 0, 'no AUTH without a token');
  assert.equal(ep.requests.length, 1);
  await sleep(300);
  assert.not.match(d.logs(), /bounce/);
  assert.equal(sh.messages.length, 0);
  const q = await runCli(['mailq', '--config', site.configPath]);
  assert.match(q.stdout, /v@remote\.example/);
  assert.match(q.stdout, /invalid_grant/);
});

test('a token endpoint quoting the form we posted (refresh token, client secret; as sent or URL-encoded): the log and mailq say [redacted]', async () => {
  // Google's refresh tokens start "1//": URL-encoded, as a form echo shows them, 1%2F%2F0g…
  const refresh = '1//0gRefresh-Tok_en42';
  const secret = 'GOCSPX-cl/ient+secret';
  const { site, ep, refreshFile, secretsDir } = await setup({
    respond: (form, n) => n % 2
      ? { status: 400, json: { error: 'invalid_grant', error_description: `bad request ${new URLSearchParams(form)} (${form.refresh_token} ${form.client_secret})` } }
      : { status: 502, json: { proxy: `upstream refused ${new URLSearchParams(form)}` } },
    siteToml: '[queue]\nretry_min = "1h"',
  });
  writeSecret(refreshFile, `${refresh}\n`);
  writeSecret(path.join(secretsDir, 'gmail.client'), `${secret}\n`);
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['e1@remote.example'], 'Subject: one\r\n\r\nx\r\n');
  await d.waitForLog(/deferred to=<e1@remote\.example>.*invalid_grant: bad request/);
  await sendMessage(site.port, 'a@tidemail.test', ['e2@remote.example'], 'Subject: two\r\n\r\nx\r\n');
  await d.waitForLog(/deferred to=<e2@remote\.example>.*HTTP 502.*upstream refused/);
  assert.ok(ep.requests.length >= 2);
  const q = await runCli(['mailq', '--config', site.configPath]);
  const all = `${d.logs()}\n${q.stdout}`;
  assert.match(all, /refresh_token=\[redacted\]/);
  for (const s of [refresh, secret]) {
    for (const form of [s, encodeURIComponent(s), new URLSearchParams({ s }).toString().slice(2)]) assert.not.ok(all.includes(form), `${form} shown`);
  }
  assert.ok(all.includes(refreshFile), 'our own words (the file to fix) stay');
});

test('a rotated refresh token is written back atomically with mode 0600 and used next time', async () => {
  const { site, sh, ep, refreshFile, secretsDir } = await setup({
    respond: (_f, n) => ({ status: 200, json: { access_token: `at-${n}`, expires_in: 61, refresh_token: `rt-${n + 1}` } }),
  });
  giveToDaemon(secretsDir);
  const before = fs.statSync(refreshFile);
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['w1@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await d.waitForLog(/oauth2 refresh token rotated and saved/);
  assert.equal(fs.readFileSync(refreshFile, 'utf8'), 'rt-2\n');
  const after = fs.statSync(refreshFile);
  assert.equal((after.mode & 0o777).toString(8), '600');
  assert.is.not(after.ino, before.ino, 'expected a new file renamed into place');
  assert.equal([after.uid, after.gid], [before.uid, before.gid]);
  assert.equal(fs.readdirSync(secretsDir).sort(), ['gmail.client', 'gmail.token'], 'no temp file left behind');
  await sleep(1200);
  await sendMessage(site.port, 'a@tidemail.test', ['w2@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await sh.waitForMessages(2);
  assert.equal(ep.requests.map((r) => r.form.refresh_token), ['rt-1', 'rt-2']);
  await waitFor('second write-back', () => fs.readFileSync(refreshFile, 'utf8') === 'rt-3\n');
});

/** Everything about a file a rewrite would change. */
const snapshot = (f: string) => {
  const st = fs.statSync(f);
  return { text: fs.readFileSync(f, 'utf8'), ino: st.ino, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, mode: (st.mode & 0o777).toString(8), uid: st.uid };
};

/** The state copies of rotated tokens (src/deliver/oauth2-token-store.ts). */
const stateCopies = (site: TestSite) => {
  const dir = path.join(site.stateDir, 'oauth2');
  return fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => path.join(dir, f)) : [];
};

test('a read-only secret (0400) in a read-only directory: rotation never touches it; the new token is kept in the state dir and used after a restart', async () => {
  // The original cannot be opened for writing at all, so a torn in-place rewrite is impossible:
  // a rotation that works here went temp + rename into the state directory.
  const { site, sh, ep, refreshFile, secretsDir } = await setup({
    respond: (_f, n) => ({ status: 200, json: { access_token: `at-${n}`, expires_in: 3600, refresh_token: `rt-${n + 1}` } }),
  });
  fs.chmodSync(refreshFile, 0o400);
  fs.chmodSync(secretsDir, 0o555);
  const before = snapshot(refreshFile);
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['ro1@remote.example'], 'Subject: 1\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await d.waitForLog(/oauth2 refresh token rotated and saved .*file=\S+\/oauth2\/[0-9a-f]+\.token for=\S+gmail\.token/);
  assert.equal(snapshot(refreshFile), before, 'the original secret was changed');
  const copies = stateCopies(site);
  assert.equal(copies.length, 1, 'one state copy, no temp file left');
  assert.equal((fs.statSync(copies[0]!).mode & 0o777).toString(8), '600');
  assert.equal((fs.statSync(path.dirname(copies[0]!)).mode & 0o777).toString(8), '700');
  assert.equal(JSON.parse(fs.readFileSync(copies[0]!, 'utf8')).token, 'rt-2');
  assert.equal(fs.readdirSync(secretsDir).sort(), ['gmail.client', 'gmail.token']);
  assert.not.match(d.logs(), /rt-2/, 'the token itself must never be logged');
  await d.stop();

  // Restarted: the token cache is gone; the rotated token comes from the state copy.
  const d2 = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['ro2@remote.example'], 'Subject: 2\r\n\r\nx\r\n');
  await sh.waitForMessages(2);
  assert.equal(ep.requests.map((r) => r.form.refresh_token), ['rt-1', 'rt-2']);
  await waitFor('the second rotation saved', () => JSON.parse(fs.readFileSync(stateCopies(site)[0]!, 'utf8')).token === 'rt-3');
  assert.equal(snapshot(refreshFile), before);
  assert.not.match(d2.logs(), /rt-[23]/);
  await d2.stop();

  // The admin authorizes afresh and replaces the original: theirs wins, our copy is dropped.
  fs.chmodSync(secretsDir, 0o755);
  fs.chmodSync(refreshFile, 0o600);
  fs.writeFileSync(refreshFile, 'rt-admin\n');
  fs.chmodSync(refreshFile, 0o400);
  fs.chmodSync(secretsDir, 0o555);
  await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['ro3@remote.example'], 'Subject: 3\r\n\r\nx\r\n');
  await sh.waitForMessages(3);
  assert.equal(ep.requests.map((r) => r.form.refresh_token), ['rt-1', 'rt-2', 'rt-admin']);
  await waitFor('the rotation of the admin\'s token saved', () => stateCopies(site).length === 1 && JSON.parse(fs.readFileSync(stateCopies(site)[0]!, 'utf8')).token === 'rt-4');
  fs.chmodSync(secretsDir, 0o755);
});

test('a writable secret in a read-only directory is still not rewritten in place (a kill mid-write would tear it)', async () => {
  const { site, sh, refreshFile, secretsDir } = await setup({
    respond: (_f, n) => ({ status: 200, json: { access_token: `at-${n}`, expires_in: 3600, refresh_token: 'rt-new' } }),
  });
  fs.chmodSync(secretsDir, 0o555);
  const before = snapshot(refreshFile);
  const d = await daemon(site);
  await sendMessage(site.port, 'a@tidemail.test', ['p@remote.example'], 'Subject: p\r\n\r\nx\r\n');
  await sh.waitForMessages(1);
  await d.waitForLog(/oauth2 refresh token rotated and saved/);
  fs.chmodSync(secretsDir, 0o755);
  assert.equal(snapshot(refreshFile), before);
  assert.equal(stateCopies(site).map((f) => JSON.parse(fs.readFileSync(f, 'utf8')).token), ['rt-new']);
});

test.run();
