// TLS credentials for the listeners: read once, as root, before privileges are dropped (the key
// is usually 0600 root). Implicit TLS (smtps) and STARTTLS share them.

import fs from 'node:fs';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';

export interface TlsCredentials {
  key: Buffer;
  cert: Buffer;
}

/** The configured PEM pair, or null when none is configured. Throws ConfigError when unreadable. */
export function loadTlsCredentials(config: Config): TlsCredentials | null {
  const { tlsCert, tlsKey } = config.smtp;
  if (!tlsCert || !tlsKey) return null;
  const read = (file: string, what: 'cert' | 'key') => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? ' (no such file)' : e.code === 'EACCES' ? ' (permission denied)' : '';
      throw new ConfigError(`${config.smtp.tlsWhere?.[what] ?? config.file ?? 'config'}: cannot read TLS ${what} ${file}: ${e.code ?? e.message}${why}\n  fix: check tls_${what} in [smtp] and the file's permissions`);
    }
  };
  const creds = { cert: read(tlsCert, 'cert'), key: read(tlsKey, 'key') };
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(creds.key.toString('latin1'))) {
    throw new ConfigError(`${config.file ?? 'config'}: ${tlsKey} is not a PEM private key\n  fix: point tls_key at the PEM key that belongs to ${tlsCert}`);
  }
  if (!creds.cert.includes('-----BEGIN CERTIFICATE-----')) {
    throw new ConfigError(`${config.file ?? 'config'}: ${tlsCert} is not a PEM certificate\n  fix: point tls_cert at a PEM certificate (chain)`);
  }
  return creds;
}
