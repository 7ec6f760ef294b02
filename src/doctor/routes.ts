// Probe: each route that is online now can do its job — for a smarthost: the name resolves, the
// port answers, the TLS handshake verifies, and AUTH accepts our login (a test login: EHLO,
// STARTTLS, AUTH, QUIT; no mail is sent). Offline routes are not touched at all.

import dns from 'node:dns/promises';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { rootCertificates } from 'node:tls';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { dial, DialError, hostPortLabel } from '../deliver/dial.js';
import { addressResolver } from '../deliver/mx-dns.js';
import { authenticate, describeAuthFailure } from '../deliver/smtp-auth.js';
import type { PipeRoute, RouteProfile, SmarthostRoute } from '../routes/profile.js';
import { ReplyDeadlines } from '../deliver/smtp-deadline.js';
import { isLanOnlyMx } from './dns.js';
import { fail, ok, skip, warn, type Finding } from './finding.js';
import type { LinkAnswer } from './links.js';

const MAX_CONNECT_MS = 15_000;

export async function probeRoutes(routes: readonly RouteProfile[], links: readonly LinkAnswer[], hostname: string): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const r of routes) {
    const area = `route ${r.name}`;
    const link = links.find((l) => l.route === r.name);
    // Said whether or not the route is online: it is about the configuration, not the link.
    if ('allowPlainAuth' in r && r.allowPlainAuth && r.auth && r.kind !== 'ssh') {
      out.push(warn(area, 'allow_plain_auth = true: the login may be sent unencrypted (tls = "none", or a server that does not offer STARTTLS)',
        `use tls = "starttls" or "implicit" and remove allow_plain_auth from ${r.file}, unless the link itself is encrypted or trusted`));
    }
    if (r.kind === 'local-only') {
      out.push(ok(area, 'local-only: matching mail stays on this machine'));
      continue;
    }
    if (!link?.online) {
      out.push(skip(area, `offline (${link?.why ?? 'unknown'}): not probed`));
      continue;
    }
    switch (r.kind) {
      case 'smarthost':
        // Every host of the list: a fallback that does not work is found before it is needed.
        for (const h of r.hosts) out.push(...(await probeSmarthost({ ...r, host: h.host, port: h.port }, hostname, area)));
        break;
      case 'pipe':
        out.push(probePipe(r, area));
        break;
      case 'mx':
        out.push(isLanOnlyMx(r)
          ? ok(area, `online; direct delivery on the LAN (recipients ${r.recipients.join(', ')}): the Internet-site DNS checks do not apply`)
          : ok(area, `online; direct delivery to each domain's MX on port ${r.port} (see the dns checks)`));
        break;
      default:
        out.push(skip(area, `online; ${r.kind} routes are not probed (their tunnel is checked when mail goes)`));
    }
  }
  return out;
}

function probePipe(r: PipeRoute, area: string): Finding {
  const cmd = r.command[0]!;
  const dirs = cmd.includes('/') ? [''] : (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  for (const d of dirs) {
    const full = d ? path.join(d, cmd) : cmd;
    try {
      fs.accessSync(full, fs.constants.X_OK);
      return ok(area, `pipe command ${full} is executable`);
    } catch {
      /* next */
    }
  }
  return fail(area, `pipe command ${cmd} is not found or not executable`, `install it, or write its full path in pipe = [...] in ${r.file}`);
}

async function probeSmarthost(r: SmarthostRoute, hostname: string, area: string): Promise<Finding[]> {
  const out: Finding[] = [];
  const where = hostPortLabel(r.host, r.port);
  const resolve = r.dnsServers.length ? addressResolver(r.dnsServers) : undefined;
  if (!net.isIP(r.host)) {
    try {
      const addrs = resolve ? (await resolve(r.host)).map((address) => ({ address })) : await dns.lookup(r.host, { all: true });
      out.push(ok(area, `${r.host} resolves to ${addrs.map((a) => a.address).join(', ')}`));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      return [...out, fail(area, `${r.host} does not resolve (${e.code ?? e.message})`, `check smarthost in ${r.file}, and this machine's DNS (resolv.conf)`)];
    }
  }
  const { default: SMTPConnectionClass } = await import('nodemailer/lib/smtp-connection/index.js');
  let socket: net.Socket;
  try {
    // The connection the daemon would make: every address raced (dial.ts), the route's keepalive.
    socket = await dial({ host: r.host, port: r.port, connectTimeoutMs: Math.min(r.connectTimeoutMs, MAX_CONNECT_MS), keepAliveMs: r.keepAliveMs, resolver: resolve });
  } catch (err) {
    const detail = err instanceof DialError ? err.detail : (err as Error).message;
    return [...out, fail(area, `cannot connect to ${where}: ${detail}`,
      `check smarthost in ${r.file}; is the port right (587 starttls, 465 implicit)? is it blocked here? try: nc -vz ${r.host} ${r.port}`)];
  }
  const conn = new SMTPConnectionClass({
    host: r.host,
    port: r.port,
    connection: socket,
    secure: r.tls === 'implicit',
    requireTLS: r.tls === 'starttls',
    ignoreTLS: r.tls === 'none',
    name: r.heloName ?? hostname,
    connectionTimeout: Math.min(r.connectTimeoutMs, MAX_CONNECT_MS),
    greetingTimeout: MAX_CONNECT_MS,
    socketTimeout: 30_000,
    tls: {
      rejectUnauthorized: r.tlsVerify,
      // Names only: SNI with an IP literal is Node's DEP0123 (the certificate is still checked).
      servername: net.isIP(r.host) ? undefined : r.host,
      ca: r.caFile ? [...rootCertificates, fs.readFileSync(r.caFile, 'utf8')] : undefined,
      minVersion: 'TLSv1.2',
    },
    logger: false,
  } as SMTPConnection.Options);
  // A server that drip-feeds its replies must not hang `tidemail check` (see smtp-deadline.ts).
  const each = MAX_CONNECT_MS;
  const probeLimits = { greetingMs: each, heloMs: each, mailMs: each, rcptMs: each, dataMs: each, dataDoneMs: each, transactionMs: 4 * each };
  new ReplyDeadlines(conn, probeLimits, `smarthost ${where}`, Math.min(r.connectTimeoutMs, MAX_CONNECT_MS)).startTransaction(Date.now() + probeLimits.transactionMs);
  const stage = { now: 'connect' as 'connect' | 'auth' | 'done' };
  try {
    await new Promise<void>((resolve, reject) => {
      conn.once('error', reject);
      conn.once('end', () => reject(new Error('connection closed by the server')));
      conn.connect(() => resolve());
    });
    const sock = (conn as unknown as { _socket?: { getProtocol?: () => string | null; remoteAddress?: string } })._socket;
    out.push(ok(area, `${where} answers${sock?.remoteAddress ? ` (${sock.remoteAddress})` : ''}`));
    if (r.tls === 'none') out.push(ok(area, 'TLS off for this route (tls = "none"): only sensible on a trusted network'));
    else out.push(ok(area, `TLS ${sock?.getProtocol?.() ?? ''} handshake ${r.tlsVerify ? 'verified' : 'done, but certificate NOT verified (tls_verify = false)'}`.replace('  ', ' ')));
    if (r.auth) {
      stage.now = 'auth';
      await authenticate(conn, r.auth);
      out.push(ok(area, `AUTH as ${r.auth.user} accepted (test login; no mail sent)`));
    }
    stage.now = 'done';
  } catch (err) {
    const e = err as Error & { code?: string; response?: string };
    if (stage.now === 'auth' && r.auth) {
      const fix = r.auth.kind === 'password' ? `put the right password in ${r.auth.passwordFile} (mode 0600), or fix auth.user in ${r.file}` : `renew the OAuth2 refresh token in ${r.auth.refreshTokenFile}`;
      out.push(fail(area, describeAuthFailure(r.auth, where, e), fix));
    } else if (e.code === 'ETLS' || /certificate|self[- ]signed|\bTLS\b|\bSSL\b/i.test(e.message)) {
      out.push(fail(area, `TLS to ${where} failed: ${e.message.trim()}`, r.caFile ? `check that ${r.caFile} is the CA that signed the server's certificate` : 'for a private CA set tls_ca_file in the route; for port 465 use tls = "implicit"'));
    } else {
      out.push(fail(area, `cannot connect to ${where}: ${(e.code && e.code !== 'ECONNECTION' ? e.code + ' ' : '') + e.message.trim()}`,
        `check smarthost in ${r.file}; is the port right (587 starttls, 465 implicit)? is it blocked here? try: nc -vz ${r.host} ${r.port}`));
    }
  } finally {
    try {
      if (stage.now === 'done') conn.quit();
      else conn.close();
    } catch {
      conn.close();
    }
  }
  return out;
}
