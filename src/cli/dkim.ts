// `tidemail dkim keygen DOMAIN [--selector S] [--bits 2048] [--type rsa|ed25519] [--out DIR] [--force]`:
// makes a DKIM signing key (mode 0600) and prints the DNS TXT record to publish and the config
// lines that make the dkim-sign check use it.

import { eachArg } from './args.js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { domainToASCII } from 'node:url';
import { promisify } from 'node:util';
import { loadConfig } from '../config/load.js';
import { chownSecret, secretOwner, writeSecretFile } from '../config/secret-file.js';
import { UsageError } from '../errors.js';
import { takeConfigOption } from './context.js';
import { EX } from './exit.js';

const USAGE = 'usage: tidemail dkim keygen DOMAIN [--selector S] [--bits 2048] [--type rsa|ed25519] [--out DIR] [--force]';

const generateKeyPair = promisify(crypto.generateKeyPair);

interface KeygenArgs {
  domain: string;
  selector: string;
  bits: number;
  type: 'rsa' | 'ed25519';
  out?: string;
  force: boolean;
}

export async function runDkim(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  const verb = args.shift();
  if (verb !== 'keygen') throw new UsageError(USAGE);
  const opts = parseKeygenArgs(args);
  // Only the config dir is needed; the embedded default (no config file) writes to ./.
  const config = loadConfig(configPath);
  const dir = path.resolve(opts.out ?? (config.configDir ? path.join(config.configDir, 'dkim') : '.'));
  const file = path.join(dir, `${opts.domain}.key`);
  if (fs.existsSync(file) && !opts.force) {
    process.stderr.write(`tidemail: ${file} already exists; keep it, or pass --force to replace it (then publish the new DNS record)\n`);
    return EX.CANTCREAT;
  }

  const { privateKey, publicKey } = await (opts.type === 'rsa'
    ? generateKeyPair('rsa', { modulusLength: opts.bits })
    : generateKeyPair('ed25519'));
  const created = fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Run as root, the key (and a directory made for it) goes to the daemon's user, or the next
  // reload, after the daemon dropped root, fails with EACCES.
  const owner = secretOwner(config.user);
  writeSecretFile(file, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, owner ?? undefined);
  if (owner) chownSecret(file, owner, created);

  const record = dkimRecord(opts.type, publicKey);
  const keyPath = config.configDir && isInside(file, config.configDir) ? path.relative(config.configDir, file) : file;
  const size = opts.type === 'rsa' ? `RSA ${opts.bits} bits` : 'Ed25519';
  process.stdout.write(
    `Wrote ${file} (${size}, mode 0600${owner ? `, owner ${owner.name}` : ''}).\n\n` +
      `Publish this DNS record:\n\n` +
      `${opts.selector}._domainkey.${opts.domain} IN TXT ${txtStrings(record).map((s) => `"${s}"`).join(' ')}\n\n` +
      `Then add to ${config.file ?? 'tidemail.toml'}:\n\n` +
      `[checks]\n` +
      `data = ["dkim-sign"]   # keep the checks already listed there\n\n` +
      `[checks.dkim-sign]\n` +
      `selector = "${opts.selector}"\n` +
      `keys = { "${opts.domain}" = "${keyPath}" }\n` +
      (opts.type === 'ed25519' ? `\nNote: some receivers still verify only RSA signatures.\n` : ''),
  );
  return EX.OK;
}

function parseKeygenArgs(args: string[]): KeygenArgs {
  let domain: string | undefined;
  let selector = 'tidemail';
  let bits: number | undefined;
  let type = 'rsa' as 'rsa' | 'ed25519'; // widened: the arg visitor below assigns it
  let out: string | undefined;
  let force = false;
  eachArg(args, USAGE, ({ flag, raw: a, value }) => {
    switch (flag) {
      case '--selector':
        selector = value();
        break;
      case '--bits': {
        const v = value();
        bits = Number(v);
        if (!/^\d+$/.test(v) || bits < 1024 || bits > 8192) throw new UsageError(`--bits ${v}: use a whole number from 1024 to 8192 (2048 is the usual size)`);
        break;
      }
      case '--type': {
        const v = value();
        if (v !== 'rsa' && v !== 'ed25519') throw new UsageError(`--type ${v}: use rsa or ed25519`);
        type = v;
        break;
      }
      case '--out':
        out = value();
        break;
      case '--force':
        force = true;
        break;
      default:
        if (a.startsWith('-') || domain !== undefined) throw new UsageError(`unexpected argument "${a}"\n${USAGE}`);
        domain = a;
    }
  });
  if (!domain) throw new UsageError(USAGE);
  const ascii = domainToASCII(domain.replace(/\.$/, '').toLowerCase());
  if (!ascii || !/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+$/.test(ascii)) {
    throw new UsageError(`"${domain}" is not a domain name`);
  }
  if (!/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(selector)) {
    throw new UsageError(`--selector ${selector}: use letters, digits and hyphens (e.g. tidemail, or 2026a to rotate keys)`);
  }
  if (type === 'ed25519' && bits !== undefined) throw new UsageError('--bits applies to RSA keys only (Ed25519 keys have a fixed size)');
  return { domain: ascii, selector, bits: bits ?? 2048, type, out, force };
}

/** The DKIM key record (RFC 6376 3.6.1; Ed25519: RFC 8463, p= is the raw 32-byte key). */
export function dkimRecord(type: 'rsa' | 'ed25519', publicKey: crypto.KeyObject): string {
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const p = type === 'rsa' ? spki : spki.subarray(spki.length - 32);
  return `v=DKIM1; k=${type}; p=${p.toString('base64')}`;
}

/** A TXT value as character-strings of at most 255 bytes each (RFC 1035 3.3.14). */
export function txtStrings(value: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < value.length; i += 255) out.push(value.slice(i, i + 255));
  return out;
}

function isInside(file: string, dir: string): boolean {
  const rel = path.relative(dir, file);
  return !!rel && !rel.startsWith('..') && !path.isAbsolute(rel);
}
