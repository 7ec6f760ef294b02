// A real OpenDKIM milter (apt: opendkim, opendkim-tools) in signing mode on a loopback port, with
// a fresh key, plus a verifier for its signatures (simple/simple, rsa-sha256).

import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { REPO } from './daemon.js';
import { canConnect, freePort, waitFor } from './ports.js';
import { isRoot, writeFile } from './tmp.js';

export interface Opendkim {
  port: number;
  /** inet:PORT@127.0.0.1 */
  address: string;
  publicKey: KeyObject;
  log(): string;
  stop(): void;
}

// OpenDKIM refuses a config or key under a world-writable directory such as /tmp, so its files
// live under /run (root's, 0755) when we may write there, else under the build dir.
function safeDir(): string {
  const base = isRoot() ? '/run/tidemail-test' : path.join(REPO, 'dist', 'test-tmp');
  fs.mkdirSync(base, { recursive: true, mode: 0o755 });
  const d = fs.mkdtempSync(path.join(base, 'opendkim-'));
  fs.chmodSync(d, 0o700);
  return d;
}

/** Signs mail whose From: is in `domain` from clients in InternalHosts (127.0.0.1) or authenticated ones. */
export async function startOpendkim(domain = 'example.org', selector = 'test'): Promise<Opendkim> {
  const dir = safeDir();
  execFileSync('opendkim-genkey', ['-D', dir, '-d', domain, '-s', selector]);
  const port = await freePort();
  const conf = writeFile(
    path.join(dir, 'opendkim.conf'),
    [
      'Syslog no',
      'Mode s',
      `Domain ${domain}`,
      `Selector ${selector}`,
      `KeyFile ${path.join(dir, `${selector}.private`)}`,
      `Socket inet:${port}@127.0.0.1`,
      'Canonicalization simple/simple',
      'SignatureAlgorithm rsa-sha256',
      '',
    ].join('\n'),
  );
  const proc: ChildProcess = spawn('/usr/sbin/opendkim', ['-f', '-x', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  let exited = false;
  proc.on('exit', () => (exited = true));
  const stop = () => {
    process.off('exit', stop);
    proc.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', stop);
  await waitFor('opendkim listening', async () => {
    if (exited) throw new Error(`opendkim exited:\n${out}`);
    return canConnect(port);
  }, 10_000, 100);
  // The TXT record: "v=DKIM1; h=sha256; k=rsa; " "p=MIIB…" split into strings.
  const txt = fs.readFileSync(path.join(dir, `${selector}.txt`), 'utf8').replace(/"\s*"/g, '');
  const p = /p=([A-Za-z0-9+/=]+)/.exec(txt)?.[1] ?? '';
  const publicKey = createPublicKey({ key: Buffer.from(p, 'base64'), format: 'der', type: 'spki' });
  return { port, address: `inet:${port}@127.0.0.1`, publicKey, log: () => out, stop };
}

/** DKIM tags of a signature value (folding whitespace removed). */
export function dkimTags(sig: string): Map<string, string> {
  return new Map(sig.replace(/\s+/g, '').split(';').filter(Boolean).map((t) => [t.slice(0, t.indexOf('=')), t.slice(t.indexOf('=') + 1)] as const));
}

/**
 * Verifies a simple/simple rsa-sha256 signature (RFC 6376 3.4.1, 3.4.3, 3.7) against a message
 * as it will be stored: `dkimSignature` is the whole added field (`DKIM-Signature: …`, CRLF folds),
 * `message` the message below it.
 * @returns a reason when it does not verify, null when it does.
 */
export function verifySimpleDkim(dkimSignature: string, message: Buffer, publicKey: KeyObject): string | null {
  const tags = dkimTags(dkimSignature.slice(dkimSignature.indexOf(':') + 1));
  const text = message.toString('latin1');
  const split = text.indexOf('\r\n\r\n');
  const head = split < 0 ? text : text.slice(0, split + 2);
  const body = split < 0 ? '' : text.slice(split + 4);
  // Simple body: the body as is, trailing empty lines reduced to one CRLF.
  const canonBody = body.replace(/(\r\n)*$/, '') + '\r\n';
  const bh = createHash('sha256').update(Buffer.from(body === '' ? '\r\n' : canonBody, 'latin1')).digest('base64');
  if (bh !== tags.get('bh')) return `body hash ${bh} is not bh=${tags.get('bh')}`;
  // Raw fields (with their folds); a name signed twice takes the bottom-most unused one (5.4.2).
  const fields = head.split(/\r\n(?![ \t])/).filter(Boolean).map((f) => ({ name: f.slice(0, f.indexOf(':')).trim().toLowerCase(), raw: f }));
  let data = '';
  for (const name of (tags.get('h') ?? '').split(':')) {
    for (let i = fields.length - 1; i >= 0; i--) {
      if (fields[i]!.name === name.toLowerCase()) {
        data += fields[i]!.raw + '\r\n';
        fields.splice(i, 1);
        break;
      }
    }
  }
  data += dkimSignature.replace(/(;\s*b=)[^;]*/, '$1');
  return verify('sha256', Buffer.from(data, 'latin1'), publicKey, Buffer.from(tags.get('b') ?? '', 'base64')) ? null : `signature over ${JSON.stringify(data)} does not verify`;
}
