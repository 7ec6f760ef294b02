// SSH tunnel route: known_hosts matching on its own, then the hop against a real OpenSSH sshd,
// then the daemon delivering through the tunnel to a smarthost behind it.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  fingerprintOf, hostKeyAlgorithms, keyTypeOf, knownHostName, matchesHost, parseKnownHosts, sshHop, verifyHostKey,
} from '../../src/deliver/ssh-tunnel.js';
import type { SshRoute } from '../../src/routes/profile.js';
import { loadRoute } from '../../src/routes/load.js';
import { mailqWhen, makeSite, runCli, startDaemon, type RunningDaemon } from '../helpers/daemon.js';
import { freePort, sleep, waitFor } from '../helpers/ports.js';
import { startSmarthost, type Smarthost } from '../helpers/smarthost.js';
import { sendMessage } from '../helpers/smtp-client.js';
import { clientKey, hashKnownHosts, sshKeygen, startSshd, type KeyPair, type TestSshd } from '../helpers/sshd.js';
import { cleanupTmp, tmpDir, writeFile } from '../helpers/tmp.js';

// ---------------------------------------------------------------------------------------------
// Shared for the file: one sshd, one smarthost behind it, one authorized client key.

let dir = '';
let key: KeyPair;
let sshd: TestSshd;
let sh: Smarthost;
const daemons: RunningDaemon[] = [];

test.before(async () => {
  dir = tmpDir();
  key = clientKey(dir);
  [sshd, sh] = await Promise.all([startSshd([key.pub]), startSmarthost()]);
});
test.after.each(async () => {
  for (const d of daemons.splice(0)) await d.stop();
  sh.messages.length = 0;
});
test.after(async () => {
  await sshd?.stop();
  await sh?.close();
  cleanupTmp();
});

/** A public key blob as a server sends it (RFC 4253 6.6), with random key bytes. */
function blob(type = 'ssh-ed25519'): Buffer {
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return Buffer.concat([str(Buffer.from(type)), str(randomBytes(32))]);
}
const line = (hosts: string, k: Buffer, marker = '') => `${marker ? marker + ' ' : ''}${hosts} ${keyTypeOf(k)} ${k.toString('base64')} comment`;
/** Logged sessions: "Accepted publickey for root" and "Disconnected from user root" lines. */
const sessionsStarted = () => (sshd.logs().match(/Accepted publickey for root/g) ?? []).length;
const sessionsEnded = () => (sshd.logs().match(/Disconnected from user root/g) ?? []).length;
const keyOf = (pubLine: string) => Buffer.from(pubLine.split(' ')[1]!, 'base64');

let n = 0;
function routeFile(opts: { knownHosts: string; keyFile?: string; targetPort?: number; user?: string }): string {
  const file = path.join(dir, 'routes', `tunnel${++n}.toml`);
  writeFile(file, sshRouteToml(opts));
  return file;
}
function sshRouteToml(opts: { knownHosts: string; keyFile?: string; targetPort?: number; user?: string }): string {
  return `kind = "ssh"
ssh.host = "127.0.0.1:${sshd.port}"
ssh.user = "${opts.user ?? 'root'}"
ssh.key_file = "${opts.keyFile ?? key.file}"
ssh.known_hosts = "${opts.knownHosts}"
target = "127.0.0.1:${opts.targetPort ?? sh.port}"
tls = "none"
connect_timeout = "10s"
`;
}
function knownHostsFile(text: string): string {
  return writeFile(path.join(dir, `known_hosts.${++n}`), text, 0o644);
}
const openHop = (file: string) => sshHop(loadRoute(file) as SshRoute).openStream!();

/** Reads from the stream until `re` matches what arrived. */
function readUntil(stream: Duplex, re: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (re.test(got)) {
        stream.off('data', onData);
        resolve(got);
      }
    };
    stream.on('data', onData);
    stream.once('error', reject);
    stream.once('close', () => reject(new Error(`closed; got ${JSON.stringify(got)}`)));
  });
}

// ---------------------------------------------------------------------------------------------
// Loading

test('ssh2 is not loaded until a tunnel is opened', () => {
  sshHop({ sshHost: 'h', sshPort: 22, sshUser: 'u', targetHost: '127.0.0.1', targetPort: 25 } as SshRoute);
  const loaded = Object.keys(createRequire(import.meta.url).cache).filter((f) => f.includes(`${path.sep}ssh2${path.sep}`));
  assert.equal(loaded, []);
});

// ---------------------------------------------------------------------------------------------
// known_hosts

test('known_hosts: plain names on port 22, [host]:port otherwise, comma lists, any case', () => {
  assert.equal(knownHostName('Relay.Example.NET', 22), 'relay.example.net');
  assert.equal(knownHostName('127.0.0.1', 2222), '[127.0.0.1]:2222');
  assert.ok(matchesHost('old.example.net,relay.example.net,192.0.2.7', 'relay.example.net'));
  assert.ok(matchesHost('RELAY.example.net', 'relay.example.net'));
  assert.not.ok(matchesHost('relay.example.net', '[relay.example.net]:2222'));
  assert.not.ok(matchesHost('[relay.example.net]:2222', 'relay.example.net'));
  assert.ok(matchesHost('[relay.example.net]:2222,[192.0.2.7]:2222', '[192.0.2.7]:2222'));
  assert.not.ok(matchesHost('[192.0.2.7]:2222', '[192.0.2.7]:22222'));
});

test('known_hosts: * and ? wildcards; a matching !negation rules the line out', () => {
  assert.ok(matchesHost('*.example.net', 'relay.example.net'));
  assert.ok(matchesHost('relay?.example.net', 'relay2.example.net'));
  assert.not.ok(matchesHost('*.example.net', 'example.org'));
  assert.not.ok(matchesHost('*.example.net,!evil.example.net', 'evil.example.net'));
  assert.ok(matchesHost('*.example.net,!evil.example.net', 'relay.example.net'));
  assert.not.ok(matchesHost('!evil.example.net', 'relay.example.net'));
  // Regex characters in names are literal.
  assert.not.ok(matchesHost('relay.example.net', 'relayxexample.net'));
});

test('known_hosts: the listed key is accepted; comments, blank, malformed and @cert-authority lines are skipped', () => {
  const k = blob();
  const text = ['# a comment', '', 'garbage', `@cert-authority *.example.net ${keyTypeOf(k)} ${blob().toString('base64')}`, line('relay.example.net', k)].join('\n');
  const entries = parseKnownHosts(text);
  assert.equal(entries.length, 2);
  assert.equal(verifyHostKey(entries, '/kh', 'relay.example.net', 22, k), { ok: true, line: 5 });
});

test('known_hosts: a different key of the same type is CHANGED, naming both fingerprints', () => {
  const listed = blob();
  const offered = blob();
  const v = verifyHostKey(parseKnownHosts(line('[127.0.0.1]:2222', listed)), '/etc/tidemail/known_hosts', '127.0.0.1', 2222, offered);
  assert.equal(v.ok, false);
  if (v.ok) return;
  assert.equal(v.why, 'changed');
  assert.match(v.message, /^host key for \[127\.0\.0\.1\]:2222 CHANGED: /);
  assert.ok(v.message.includes(`offered ssh-ed25519 ${fingerprintOf(offered)}`), v.message);
  assert.ok(v.message.includes(`/etc/tidemail/known_hosts has ${fingerprintOf(listed)} (line 1)`), v.message);
  assert.match(v.message, /possible man-in-the-middle/);
});

test('known_hosts: an unlisted host is refused with the offered fingerprint and the ssh-keyscan to run', () => {
  const offered = blob();
  const entries = parseKnownHosts(line('other.example.net', blob()));
  const v = verifyHostKey(entries, '/etc/tidemail/known_hosts', '127.0.0.1', 2222, offered);
  assert.equal(v.ok, false);
  if (v.ok) return;
  assert.equal(v.why, 'unknown');
  assert.equal(
    v.message,
    `host key for [127.0.0.1]:2222 is not in /etc/tidemail/known_hosts: the server offered ssh-ed25519 ${fingerprintOf(offered)}; ` +
      'add it with ssh-keyscan -p 2222 127.0.0.1 >> /etc/tidemail/known_hosts after checking the fingerprint',
  );
  const empty = verifyHostKey([], '/kh', 'relay.example.net', 22, offered);
  assert.match(empty.ok ? '' : empty.message, /add it with ssh-keyscan relay\.example\.net >> \/kh/);
});

test('known_hosts: a host listed only with another key type is refused as unknown, saying which types are listed', () => {
  const v = verifyHostKey(parseKnownHosts(line('relay.example.net', blob('ecdsa-sha2-nistp256'))), '/kh', 'relay.example.net', 22, blob());
  assert.equal(v.ok ? '' : v.why, 'unknown');
  assert.match(v.ok ? '' : v.message, /it lists only ecdsa-sha2-nistp256 keys for it/);
});

test('known_hosts: a @revoked key is refused even when also listed as trusted', () => {
  const k = blob();
  const entries = parseKnownHosts([line('relay.example.net', k), line('*', k, '@revoked')].join('\n'));
  const v = verifyHostKey(entries, '/kh', 'relay.example.net', 22, k);
  assert.equal(v.ok ? '' : v.why, 'revoked');
  assert.match(v.ok ? '' : v.message, /marked @revoked in \/kh line 2/);
});

test('known_hosts: entries hashed by ssh-keygen -H match (HMAC-SHA1), and only their own host', () => {
  const k = blob();
  const file = knownHostsFile([line('[127.0.0.1]:2222', k), line('relay.example.net', blob())].join('\n') + '\n');
  const text = hashKnownHosts(file);
  assert.not.match(text, /127\.0\.0\.1|relay/);
  assert.match(text, /^\|1\|[A-Za-z0-9+/=]+\|[A-Za-z0-9+/=]+ ssh-ed25519 /m);
  const entries = parseKnownHosts(text);
  assert.equal(verifyHostKey(entries, file, '127.0.0.1', 2222, k).ok, true);
  assert.equal(verifyHostKey(entries, file, '127.0.0.1', 2223, k).ok, false);
  const changed = verifyHostKey(entries, file, 'relay.example.net', 22, k);
  assert.equal(changed.ok ? '' : changed.why, 'changed');
});

test('fingerprints are printed the way ssh-keygen -l prints them', () => {
  const kp = sshKeygen(path.join(dir, 'fp', 'key'));
  const expected = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', `${kp.file}.pub`], { encoding: 'utf8' }).split(' ')[1];
  assert.equal(fingerprintOf(keyOf(kp.pub)), expected);
  assert.equal(keyTypeOf(keyOf(kp.pub)), 'ssh-ed25519');
});

test('host key algorithms: the types known_hosts lists come first; unlisted host → ssh2 defaults', () => {
  const entries = parseKnownHosts([line('relay.example.net', blob('ssh-rsa')), line('other.example.net', blob())].join('\n'));
  const algs = hostKeyAlgorithms(entries, 'relay.example.net')!;
  assert.equal(algs.slice(0, 3), ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
  assert.ok(algs.includes('ssh-ed25519'));
  assert.equal(new Set(algs).size, algs.length);
  assert.equal(hostKeyAlgorithms(entries, 'unlisted.example.net'), undefined);
});

// ---------------------------------------------------------------------------------------------
// The hop against a real sshd

test('the tunnel reaches the SMTP server behind sshd; closing it ends the SSH session', async () => {
  const file = routeFile({ knownHosts: knownHostsFile(sshd.knownHostsLine + '\n') });
  const before = sessionsStarted();
  const stream = await openHop(file);
  assert.match(await readUntil(stream, /^220 .*\r\n/), /^220 /);
  assert.equal(sessionsStarted(), before + 1);
  const ended = sessionsEnded();
  stream.destroy();
  await waitFor('the SSH session to end', () => sessionsEnded() > ended, 10_000);
});

test('a server whose host key differs from known_hosts is refused before we log in', async () => {
  const other = sshKeygen(path.join(dir, 'other', 'host_key'));
  const kh = knownHostsFile(`[127.0.0.1]:${sshd.port} ${other.pub}\n`);
  const before = sessionsStarted();
  const err = await openHop(routeFile({ knownHosts: kh })).then(() => null, (e: Error) => e);
  assert.ok(err, 'the tunnel opened');
  assert.match(err!.message, new RegExp(`^host key for \\[127\\.0\\.0\\.1\\]:${sshd.port} CHANGED: the server offered ssh-ed25519 SHA256:`));
  assert.ok(err!.message.includes(fingerprintOf(keyOf(sshd.hostKey))), err!.message);
  assert.ok(err!.message.includes(`${kh} has ${fingerprintOf(keyOf(other.pub))}`), err!.message);
  await sleep(100);
  assert.equal(sessionsStarted(), before, 'the client authenticated to an untrusted server');
});

test('a client key that sshd does not accept gives a clear error', async () => {
  const stranger = clientKey(path.join(dir, 'stranger'));
  const err = await openHop(routeFile({ knownHosts: knownHostsFile(sshd.knownHostsLine + '\n'), keyFile: stranger.file })).then(() => null, (e: Error) => e);
  assert.match(err?.message ?? '', new RegExp(`^the ssh server refused login as root with the key in ${stranger.file.replace(/[.]/g, '\\.')} \\(add its public key to ~root/\\.ssh/authorized_keys on 127\\.0\\.0\\.1\\)$`));
});

test('a target nobody listens on gives a clear error naming it', async () => {
  const closed = await freePort();
  const err = await openHop(routeFile({ knownHosts: knownHostsFile(sshd.knownHostsLine + '\n'), targetPort: closed })).then(() => null, (e: Error) => e);
  assert.match(err?.message ?? '', new RegExp(`^the ssh server could not connect to 127\\.0\\.0\\.1:${closed}: Connection refused \\(is an SMTP server listening there\\?\\)$`));
});

test('an sshd that forbids TCP forwarding gives a clear error', async () => {
  const strict = await startSshd([key.pub], { allowTcpForwarding: false });
  try {
    const file = path.join(dir, 'routes', 'strict.toml');
    writeFile(file, sshRouteToml({ knownHosts: knownHostsFile(strict.knownHostsLine + '\n') }).replace(`:${sshd.port}"`, `:${strict.port}"`));
    const err = await openHop(file).then(() => null, (e: Error) => e);
    assert.match(err?.message ?? '', /^the ssh server refused to forward to 127\.0\.0\.1:\d+ \(administratively prohibited: open failed\); allow it there with AllowTcpForwarding yes or PermitOpen 127\.0\.0\.1:\d+$/);
  } finally {
    await strict.stop();
  }
});

test('a missing or unusable key file is named in the error', async () => {
  const kh = knownHostsFile(sshd.knownHostsLine + '\n');
  const file = routeFile({ knownHosts: kh });
  const route = loadRoute(file) as SshRoute;
  const missing = await sshHop({ ...route, keyFile: path.join(dir, 'nope') }).openStream!().then(() => null, (e: Error) => e);
  assert.equal(missing?.message, `cannot read ssh.key_file ${path.join(dir, 'nope')}: ENOENT`);
  const junk = writeFile(path.join(dir, 'junk-key'), 'not a key\n', 0o600);
  const bad = await sshHop({ ...route, keyFile: junk }).openStream!().then(() => null, (e: Error) => e);
  assert.match(bad?.message ?? '', new RegExp(`^ssh\\.key_file ${junk.replace(/[.]/g, '\\.')} is not a usable private key: `));
});

// ---------------------------------------------------------------------------------------------
// The daemon delivering through the tunnel

/** Awaits `p`; when it fails, the error carries the daemon's and sshd's logs. */
async function withLogs<T>(d: RunningDaemon, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- daemon ---\n${d.logs()}--- sshd (end) ---\n${sshd.logs().slice(-3000)}`, { cause: err });
  }
}

async function siteWithTunnel(knownHosts: string, siteToml = '') {
  const site = await makeSite(siteToml);
  site.route('tunnel', sshRouteToml({ knownHosts }));
  const d = await startDaemon(site);
  daemons.push(d);
  return { site, d };
}

test('a message goes through the tunnel and arrives byte-for-byte plus a Received header', async () => {
  const started = sessionsStarted();
  const ended = sessionsEnded();
  const { site, d } = await siteWithTunnel(knownHostsFile(sshd.knownHostsLine + '\n'));
  const body = 'Subject: via ssh\r\nX-Test: tunnel\r\n\r\nline one\r\n.leading dot\r\nünïcödé 8bit\r\n';
  const reply = await sendMessage(site.port, 'alice@tidemail.test', ['bob@remote.example'], body);
  assert.match(reply, /^250 /);
  const [m] = await withLogs(d, sh.waitForMessages(1));
  assert.equal(m!.from, 'alice@tidemail.test');
  assert.equal(m!.to, ['bob@remote.example']);
  const original = Buffer.from(body);
  assert.equal(m!.raw.subarray(m!.raw.length - original.length).toString('hex'), original.toString('hex'), 'body differs from what was sent');
  assert.match(m!.raw.subarray(0, m!.raw.length - original.length).toString(), /^Received: from [^\r\n]+\r\n(\t[^\r\n]+\r\n)+$/);
  await withLogs(d, d.waitForLog(/delivered to=<bob@remote\.example> route=tunnel/));
  // The idle SMTP connection is closed after a few seconds, and its SSH session with it.
  assert.equal(sessionsStarted() - started, 1, sshd.logs());
  await withLogs(d, waitFor('the SSH session to end with the SMTP connection', () => sessionsEnded() > ended, 15_000));
});

test('a changed host key: the message stays queued, log and mailq say why, nothing reaches the smarthost', async () => {
  const other = sshKeygen(path.join(dir, 'other2', 'host_key'));
  const { site, d } = await siteWithTunnel(knownHostsFile(`[127.0.0.1]:${sshd.port} ${other.pub}\n`), '[queue]\nretry_min = "1h"');
  assert.match(await sendMessage(site.port, 'a@tidemail.test', ['c@remote.example'], 'Subject: mitm\r\n\r\nx\r\n'), /^250 /);
  const [line] = await withLogs(d, d.waitForLog(/.*deferred to=<c@remote\.example>.*/));
  assert.match(line, new RegExp(`host key for \\[127\\.0\\.0\\.1\\]:${sshd.port} CHANGED.*possible man-in-the-middle`));
  assert.match(line, /cannot connect to 127\.0\.0\.1:\d+ via ssh root@127\.0\.0\.1:\d+: host key/);
  const q = await mailqWhen(site.configPath, 'the reason', (out) => /CHANGED/.test(out));
  assert.match(q, /c@remote\.example/);
  assert.equal(sh.messages.length, 0);
  assert.not.match(d.logs(), /bounce/);
});

test('an unknown host (empty known_hosts) is refused the same way, with the fingerprint to check', async () => {
  const { site, d } = await siteWithTunnel(knownHostsFile(''), '[queue]\nretry_min = "1h"');
  await sendMessage(site.port, 'a@tidemail.test', ['u@remote.example'], 'Subject: unknown\r\n\r\nx\r\n');
  const [line] = await withLogs(d, d.waitForLog(/.*deferred to=<u@remote\.example>.*/));
  const fp = fingerprintOf(keyOf(sshd.hostKey));
  assert.ok(line.includes(`host key for [127.0.0.1]:${sshd.port} is not in`), line);
  assert.ok(line.includes(fp), line);
  await mailqWhen(site.configPath, 'the ssh-keyscan hint', (out) => out.includes(`ssh-keyscan -p ${sshd.port} 127.0.0.1`));
  assert.equal(sh.messages.length, 0);
  assert.not.match(d.logs(), /bounce/);
});

test('a hashed known_hosts entry (ssh-keygen -H) is trusted and delivers', async () => {
  const kh = knownHostsFile(sshd.knownHostsLine + '\n');
  assert.not.match(hashKnownHosts(kh), /127\.0\.0\.1/);
  fs.chmodSync(kh, 0o644);
  const { site, d } = await siteWithTunnel(kh);
  await sendMessage(site.port, 'a@tidemail.test', ['h@remote.example'], 'Subject: hashed\r\n\r\nx\r\n');
  const [m] = await withLogs(d, sh.waitForMessages(1));
  assert.equal(m!.to, ['h@remote.example']);
});

test.run();
