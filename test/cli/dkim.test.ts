// `tidemail dkim keygen`, run as the real CLI: the key file (0600, PEM), the DNS record printed
// for it (it must carry the key's own public half), overwrite protection and argument errors.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { EX } from '../../src/cli/exit.js';
import { makeSite, runCli } from '../helpers/daemon.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('dkim keygen');
test.after(() => cleanupTmp());

/** The quoted strings of the printed TXT record, and their concatenation. */
function txtOf(stdout: string, owner: string): { strings: string[]; value: string } {
  const line = stdout.split('\n').find((l) => l.startsWith(`${owner} IN TXT `));
  assert.ok(line, `no "${owner} IN TXT" line in:\n${stdout}`);
  const strings = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]!);
  return { strings, value: strings.join('') };
}

function tags(value: string): Record<string, string> {
  return Object.fromEntries(value.split(';').map((t) => t.trim()).filter(Boolean).map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)]));
}

test('an RSA key: 0600 PEM file, and a TXT record with its public key in ≤255-char strings', async () => {
  const dir = tmpDir();
  const r = await runCli(['dkim', 'keygen', 'Example.ORG', '--out', dir, '--selector', 'mail2026']);
  assert.is(r.code, EX.OK, r.stderr);
  const file = path.join(dir, 'example.org.key');
  assert.is(fs.statSync(file).mode & 0o777, 0o600);
  const key = crypto.createPrivateKey(fs.readFileSync(file));
  assert.is(key.asymmetricKeyType, 'rsa');
  assert.is(key.asymmetricKeyDetails?.modulusLength, 2048);

  const { strings, value } = txtOf(r.stdout, 'mail2026._domainkey.example.org');
  assert.ok(strings.length >= 2 && strings.every((s) => s.length <= 255), `strings: ${strings.map((s) => s.length)}`);
  const t = tags(value);
  assert.is(t.v, 'DKIM1');
  assert.is(t.k, 'rsa');
  const published = crypto.createPublicKey({ key: Buffer.from(t.p!, 'base64'), format: 'der', type: 'spki' });
  assert.ok(published.equals(crypto.createPublicKey(key)), 'the record does not carry this key');
  // The config lines to add name the key file and the selector.
  assert.match(r.stdout, /\[checks\.dkim-sign\]/);
  assert.ok(r.stdout.includes(`keys = { "example.org" = "${file}" }`), r.stdout);
  assert.match(r.stdout, /selector = "mail2026"/);
});

test('an Ed25519 key publishes the raw 32-byte public key (RFC 8463)', async () => {
  const dir = tmpDir();
  const r = await runCli(['dkim', 'keygen', 'example.com', '--type', 'ed25519', '--out', dir]);
  assert.is(r.code, EX.OK, r.stderr);
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'example.com.key')));
  assert.is(key.asymmetricKeyType, 'ed25519');
  const t = tags(txtOf(r.stdout, 'tidemail._domainkey.example.com').value);
  assert.is(t.k, 'ed25519');
  const raw = Buffer.from(t.p!, 'base64');
  assert.is(raw.length, 32);
  const spki = crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
  assert.ok(spki.subarray(-32).equals(raw));
});

test('--bits sets the RSA size', async () => {
  const dir = tmpDir();
  const r = await runCli(['dkim', 'keygen', 'example.net', '--bits', '1024', '--out', dir]);
  assert.is(r.code, EX.OK, r.stderr);
  assert.is(crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'example.net.key'))).asymmetricKeyDetails?.modulusLength, 1024);
  assert.is(txtOf(r.stdout, 'tidemail._domainkey.example.net').strings.length, 1); // fits one string
});

test('refuses to overwrite a key without --force; --force replaces it', async () => {
  const dir = tmpDir();
  assert.is((await runCli(['dkim', 'keygen', 'example.org', '--type', 'ed25519', '--out', dir])).code, EX.OK);
  const file = path.join(dir, 'example.org.key');
  const before = fs.readFileSync(file, 'utf8');
  const again = await runCli(['dkim', 'keygen', 'example.org', '--type', 'ed25519', '--out', dir]);
  assert.is(again.code, EX.CANTCREAT);
  assert.match(again.stderr, /already exists[\s\S]*--force/);
  assert.is(fs.readFileSync(file, 'utf8'), before);
  const forced = await runCli(['dkim', 'keygen', 'example.org', '--type', 'ed25519', '--out', dir, '--force']);
  assert.is(forced.code, EX.OK, forced.stderr);
  assert.is.not(fs.readFileSync(file, 'utf8'), before);
  assert.is(fs.statSync(file).mode & 0o777, 0o600);
});

test('without --out the key goes to <config dir>/dkim and the config line is relative to it', async () => {
  const site = await makeSite();
  const r = await runCli(['dkim', 'keygen', 'example.org', '--type', 'ed25519', '--config', site.configPath]);
  assert.is(r.code, EX.OK, r.stderr);
  assert.ok(fs.existsSync(path.join(site.dir, 'dkim', 'example.org.key')));
  assert.ok(r.stdout.includes('keys = { "example.org" = "dkim/example.org.key" }'), r.stdout);
});

test('usage errors exit 64 and write nothing', async () => {
  const dir = tmpDir();
  for (const args of [
    ['dkim'],
    ['dkim', 'keygen'],
    ['dkim', 'frobnicate', 'example.org'],
    ['dkim', 'keygen', 'not a domain'],
    ['dkim', 'keygen', 'example.org', '--bits', '512'],
    ['dkim', 'keygen', 'example.org', '--type', 'dsa'],
    ['dkim', 'keygen', 'example.org', '--type', 'ed25519', '--bits', '2048'],
    ['dkim', 'keygen', 'example.org', '--selector', 'a_b'],
    ['dkim', 'keygen', 'example.org', '--out'],
  ]) {
    const r = await runCli([...args, ...(args.includes('--out') ? [] : ['--out', dir])]);
    assert.is(r.code, EX.USAGE, `${args.join(' ')}: ${r.code} ${r.stderr}`);
    assert.ok(r.stderr.length > 0);
  }
  assert.equal(fs.readdirSync(dir), []);
});

test.run();
