// `tidemail tls selfsigned --out DIR [--name HOST] [--force]`: a self-signed certificate for
// STARTTLS/smtps until a real one is configured. openssl does the work (present on Debian and
// OpenWrt); node:crypto cannot write X.509 certificates.

import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../config/load.js';
import { UsageError } from '../errors.js';
import { takeConfigOption } from './context.js';
import { secretOwner } from '../config/secret-file.js';
import { EX } from './exit.js';

const USAGE = 'usage: tidemail tls selfsigned --out DIR [--name HOST] [--force]';

export async function runTls(argv: string[]): Promise<number> {
  const args = [...argv];
  const configPath = takeConfigOption(args);
  if (args.shift() !== 'selfsigned') throw new UsageError(USAGE);
  let out: string | undefined;
  let name: string | undefined;
  let force = false;
  while (args.length) {
    const a = args.shift()!;
    if (a === '--out') out = args.shift();
    else if (a === '--name') name = args.shift();
    else if (a === '--force') force = true;
    else throw new UsageError(`unknown option "${a}"; ${USAGE}`);
  }
  if (!out) throw new UsageError(USAGE);
  const config = loadConfig(configPath);
  name ??= config.hostname;
  if (!/^[A-Za-z0-9.-]+$/.test(name)) throw new UsageError(`"${name}" is not a host name`);
  const cert = path.join(out, 'cert.pem');
  const key = path.join(out, 'key.pem');
  if (!force && (fs.existsSync(cert) || fs.existsSync(key))) {
    process.stderr.write(`tidemail: ${cert} or ${key} exists; pass --force to replace them\n`);
    return EX.CANTCREAT;
  }
  fs.mkdirSync(out, { recursive: true, mode: 0o755 });
  const tmpKey = `${key}.${process.pid}.tmp`;
  fs.writeFileSync(tmpKey, '', { mode: 0o600 }); // 0600 before openssl writes the key into it
  try {
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '3650',
      '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`,
      '-keyout', tmpKey, '-out', cert,
    ]);
  } catch (err) {
    fs.rmSync(tmpKey, { force: true });
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    process.stderr.write(`tidemail: openssl failed: ${e.code === 'ENOENT' ? 'openssl is not installed' : (e.stderr ?? e.message).trim()}\n`);
    return EX.UNAVAILABLE;
  }
  fs.chmodSync(tmpKey, 0o600);
  // Run as root, the key goes to the daemon's user: it rereads it on SIGHUP after dropping root.
  const owner = secretOwner(config.user);
  if (owner) fs.chownSync(tmpKey, owner.uid, owner.gid);
  fs.renameSync(tmpKey, key);
  fs.chmodSync(cert, 0o644);
  process.stdout.write(`wrote ${cert} and ${key} (key mode 0600${owner ? `, owner ${owner.name}` : ''}; self-signed for ${name}, 10 years); in [smtp]:\n  tls_cert = "${cert}"\n  tls_key = "${key}"\n`);
  return EX.OK;
}
