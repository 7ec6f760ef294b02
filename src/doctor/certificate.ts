// Probe: the server certificate ([smtp] tls_cert / tls_key) is readable, valid now, not expiring
// within 14 days, names our hostname, and matches its key.

import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Config } from '../config/schema.js';
import { fail, ok, warn, type Finding } from './finding.js';

const AREA = 'certificate';
const SOON_MS = 14 * 86_400_000;

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || host.startsWith('127.');

export function probeCertificate(config: Config, now = Date.now()): Finding[] {
  const { tlsCert, tlsKey } = config.smtp;
  const renew = `renew it (e.g. certbot renew), or make a self-signed one: tidemail tls selfsigned --out ${tlsCert ? tlsCert.replace(/\/[^/]*$/, '') : '/etc/tidemail/tls'}`;
  if (!tlsCert || !tlsKey) {
    const open = [...config.smtp.listen].filter((l) => !isLoopback(l.host));
    if (!open.length) return [ok(AREA, 'none configured; STARTTLS is not offered (fine: only loopback listeners)')];
    return [warn(AREA, `none configured: mail from ${open.map((l) => l.host).join(', ')} travels unencrypted`,
      'make one (tidemail tls selfsigned --out /etc/tidemail/tls) and set [smtp] tls_cert and tls_key')];
  }
  let cert: crypto.X509Certificate;
  try {
    cert = new crypto.X509Certificate(fs.readFileSync(tlsCert));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return [fail(AREA, `cannot read ${tlsCert}: ${e.code ?? e.message}`, `point [smtp] tls_cert at a PEM certificate readable by the daemon`)];
  }
  const out: Finding[] = [];
  const from = Date.parse(cert.validFrom);
  const to = Date.parse(cert.validTo);
  const day = (t: number) => new Date(t).toISOString().slice(0, 10);
  if (now > to) out.push(fail(AREA, `${tlsCert} expired on ${day(to)}: clients that verify will refuse STARTTLS`, renew));
  else if (now < from) out.push(fail(AREA, `${tlsCert} is not valid before ${day(from)} (is the clock right?)`, 'check the system clock (date), or reissue the certificate'));
  else if (to - now < SOON_MS) out.push(warn(AREA, `${tlsCert} expires on ${day(to)}, in ${Math.ceil((to - now) / 86_400_000)} day(s)`, renew));
  else out.push(ok(AREA, `${tlsCert} valid until ${day(to)}`));

  if (!cert.checkHost(config.hostname)) {
    const names = cert.subjectAltName ?? cert.subject.replace(/\n/g, ', ');
    out.push(warn(AREA, `${tlsCert} does not name ${config.hostname} (it names ${names})`,
      `get a certificate for ${config.hostname}, or set hostname to a name the certificate carries`));
  } else out.push(ok(AREA, `names ${config.hostname}${cert.issuer === cert.subject ? ' (self-signed: clients must be told to trust it)' : ''}`));

  try {
    const key = crypto.createPrivateKey(fs.readFileSync(tlsKey));
    if (!cert.checkPrivateKey(key)) out.push(fail(AREA, `${tlsKey} is not the key of ${tlsCert}`, 'point tls_key at the key the certificate was issued for'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    out.push(fail(AREA, `cannot read the key ${tlsKey}: ${e.code ?? e.message}`, `point [smtp] tls_key at the PEM private key (mode 0600)`));
  }
  return out;
}
