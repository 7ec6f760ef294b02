// SSH tunnel hop: SMTP spoken over an ssh2 `forwardOut` channel to the SMTP server as seen
// from the SSH host (usually its own 127.0.0.1:25). Key authentication only; the server's
// host key must be listed in an OpenSSH known_hosts file, or nothing is sent.
//
// One SSH connection per SMTP connection: SmtpTransport already keeps an SMTP connection for
// several messages, so the tunnel lives exactly as long as that connection.
// ssh2 is loaded on the first connection, so a daemon without ssh routes never pays for it.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs/promises';
import type { Duplex } from 'node:stream';
import type { Client, ServerHostKeyAlgorithm } from 'ssh2';
import type { SshRoute } from '../routes/profile.js';
import type { SmtpHop } from './smtp.js';

export function sshHop(route: SshRoute): SmtpHop {
  return {
    // Read after "cannot connect to …" in logs and DSNs, so ASCII and target first.
    label: `${hostPort(route.targetHost, route.targetPort)} via ssh ${route.sshUser}@${hostPort(route.sshHost, route.sshPort)}`,
    host: route.targetHost,
    port: route.targetPort,
    servername: route.targetHost,
    openStream: () => openTunnel(route),
  };
}

function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Connects, verifies the host key, logs in with the key file and opens a channel to the target.
 * The channel is the SMTP connection; closing it closes the SSH connection.
 * @throws Error with a message meant for the log and mailq (SmtpTransport makes it a tempfail).
 */
async function openTunnel(route: SshRoute): Promise<Duplex> {
  const ssh2 = (await import('ssh2')).default;
  // Both files are read per connection, so an edited known_hosts or a new key needs no reload.
  const privateKey = await readFileClearly(route.keyFile, 'ssh.key_file');
  const parsed = ssh2.utils.parseKey(privateKey);
  if (parsed instanceof Error) {
    throw new Error(`ssh.key_file ${route.keyFile} is not a usable private key: ${parsed.message} (use a key without a passphrase, e.g. ssh-keygen -t ed25519 -N '')`);
  }
  const knownHosts = parseKnownHosts((await readFileClearly(route.knownHosts, 'ssh.known_hosts')).toString('utf8'));
  const name = knownHostName(route.sshHost, route.sshPort);
  const serverHostKey = hostKeyAlgorithms(knownHosts, name);

  const client: Client = new ssh2.Client();
  let refusal: string | null = null;
  // Typed as a plain Duplex: @types/ssh2 declares destroy() without the error argument.
  let channel: Duplex | null = null;
  return new Promise<Duplex>((resolve, reject) => {
    let settled = false;
    const fail = (err: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      client.end();
      reject(err);
    };
    // readyTimeout covers connect + handshake + login; this also covers opening the channel.
    const deadline = setTimeout(() => fail(new Error(`ssh setup timed out after ${route.connectTimeoutMs} ms`)), route.connectTimeoutMs + 1_000);
    client.on('error', (err: Error & { level?: string }) => {
      // After setup an error (keepalive timeout, reset) ends the SMTP connection too.
      if (settled) return void channel?.destroy(err);
      fail(refusal ? new Error(refusal) : new Error(describeSshError(err, route), { cause: err }));
    });
    client.on('close', () => {
      if (settled) return void channel?.destroy();
      fail(new Error(refusal ?? 'the ssh server closed the connection during setup'));
    });
    client.on('ready', () => {
      client.forwardOut('127.0.0.1', 0, route.targetHost, route.targetPort, (err, ch) => {
        if (settled) return void ch?.destroy();
        if (err) return fail(new Error(describeOpenFailure(err, route), { cause: err }));
        settled = true;
        clearTimeout(deadline);
        channel = ch;
        ch.once('close', () => client.end());
        resolve(ch);
      });
    });
    try {
      client.connect({
        host: route.sshHost,
        port: route.sshPort,
        username: route.sshUser,
        privateKey,
        readyTimeout: route.connectTimeoutMs,
        // A link that dies mid-message is noticed in about a minute, not at the SMTP timeout.
        keepaliveInterval: 15_000,
        keepaliveCountMax: 4,
        algorithms: serverHostKey ? { serverHostKey } : undefined,
        hostVerifier: (key: Buffer) => {
          // ssh2 calls this from its socket handler: a throw here would take the daemon down.
          try {
            const verdict = verifyHostKey(knownHosts, route.knownHosts, route.sshHost, route.sshPort, key);
            if (!verdict.ok) refusal = verdict.message;
            return verdict.ok;
          } catch (err) {
            refusal = `cannot check the host key against ${route.knownHosts}: ${(err as Error).message}`;
            return false;
          }
        },
      });
    } catch (err) {
      fail(err as Error);
    }
  });
}

async function readFileClearly(file: string, key: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === 'EACCES' ? ' (the daemon reads it as its run user; chown it to that user)' : '';
    throw new Error(`cannot read ${key} ${file}: ${e.code ?? e.message}${hint}`, { cause: err });
  }
}

/** RFC 4254 5.1 reason codes of a refused channel, in words that say where to look. */
function describeOpenFailure(err: Error & { reason?: number | string }, route: SshRoute): string {
  const target = hostPort(route.targetHost, route.targetPort);
  const why = err.message.replace(/^\(SSH\) Channel open failure:\s*/, '') || 'no reason given';
  switch (err.reason) {
    case 1: // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
      return `the ssh server refused to forward to ${target} (administratively prohibited: ${why}); allow it there with AllowTcpForwarding yes or PermitOpen ${target}`;
    case 2: // SSH_OPEN_CONNECT_FAILED
      return `the ssh server could not connect to ${target}: ${why} (is an SMTP server listening there?)`;
    default:
      return `the ssh server could not open a channel to ${target}: ${why}`;
  }
}

function describeSshError(err: Error & { level?: string }, route: SshRoute): string {
  switch (err.level) {
    case 'client-authentication':
      return `the ssh server refused login as ${route.sshUser} with the key in ${route.keyFile} (add its public key to ~${route.sshUser}/.ssh/authorized_keys on ${route.sshHost})`;
    case 'client-timeout':
      return `no ssh session within ${route.connectTimeoutMs} ms (${err.message})`;
    case 'handshake':
      return /host key/i.test(err.message)
        ? `ssh handshake failed: ${err.message} (the server offers none of the host key types that ${route.knownHosts} lists for it)`
        : `ssh handshake failed: ${err.message}`;
    default:
      return err.message;
  }
}

// ---------------------------------------------------------------------------------------------
// known_hosts, as OpenSSH writes and reads it (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"):
//
//   [@revoked|@cert-authority] PATTERNS KEYTYPE BASE64KEY [COMMENT]
//
// PATTERNS is a comma-separated list of host names or addresses, `[host]:port` for a port other
// than 22, with `*` and `?` wildcards and `!` negation; or one hashed name `|1|SALT|HASH` where
// HASH = HMAC-SHA1(key = SALT, the name as it would have been written), both base64.
// @cert-authority lines are skipped: ssh2 does not verify host certificates.

export interface KnownHost {
  /** 1-based line number, for messages. */
  line: number;
  marker: '' | '@revoked' | '@cert-authority';
  patterns: string;
  keyType: string;
  key: Buffer;
}

export function parseKnownHosts(text: string): KnownHost[] {
  const out: KnownHost[] = [];
  text.split('\n').forEach((raw, i) => {
    const fields = raw.trim().split(/\s+/);
    if (!fields[0] || fields[0].startsWith('#')) return;
    const marker = fields[0].startsWith('@') ? fields.shift()! : '';
    if (marker !== '' && marker !== '@revoked' && marker !== '@cert-authority') return;
    const [patterns, keyType, b64] = fields;
    if (!patterns || !keyType || !b64 || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) return;
    out.push({ line: i + 1, marker, patterns, keyType, key: Buffer.from(b64, 'base64') });
  });
  return out;
}

/** The name OpenSSH looks up: "host" on port 22, "[host]:port" otherwise; lower case. */
export function knownHostName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** Does this line's host field name `name` (from knownHostName)? */
export function matchesHost(patterns: string, name: string): boolean {
  if (patterns.startsWith('|1|')) {
    const [, , salt, hash] = patterns.split('|');
    if (!salt || !hash) return false;
    const want = Buffer.from(hash, 'base64');
    const got = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest();
    return want.length === got.length && timingSafeEqual(want, got);
  }
  let matched = false;
  for (const p of patterns.split(',')) {
    const negated = p.startsWith('!');
    if (!globMatch(negated ? p.slice(1) : p, name)) continue;
    // A matching negated pattern rules the line out whatever else matches (OpenSSH match_hostname).
    if (negated) return false;
    matched = true;
  }
  return matched;
}

function globMatch(pattern: string, name: string): boolean {
  const re = pattern.toLowerCase().replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${re}$`).test(name);
}

/** "SHA256:…" as ssh-keygen -l and ssh print it. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The key type named inside a public key blob (RFC 4253 6.6: string "ssh-ed25519", …). */
export function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  const len = key.readUInt32BE(0);
  return len > 0 && len < 64 && key.length >= 4 + len ? key.subarray(4, 4 + len).toString('latin1') : 'unknown';
}

export type HostKeyVerdict = { ok: true; line: number } | { ok: false; why: 'unknown' | 'changed' | 'revoked'; message: string };

/**
 * Checks the key a server offered against known_hosts entries for host:port.
 * @returns ok with the matching line, or a refusal whose message says what to do.
 */
export function verifyHostKey(entries: readonly KnownHost[], file: string, host: string, port: number, key: Buffer): HostKeyVerdict {
  const name = knownHostName(host, port);
  const type = keyTypeOf(key);
  const offered = `${type} ${fingerprintOf(key)}`;
  const forHost = entries.filter((e) => e.marker !== '@cert-authority' && matchesHost(e.patterns, name));
  const revoked = forHost.find((e) => e.marker === '@revoked' && e.key.equals(key));
  if (revoked) {
    return { ok: false, why: 'revoked', message: `host key for ${name} (${offered}) is marked @revoked in ${file} line ${revoked.line}; refusing to connect` };
  }
  const trusted = forHost.filter((e) => e.marker === '');
  const same = trusted.find((e) => e.key.equals(key));
  if (same) return { ok: true, line: same.line };
  const sameType = trusted.filter((e) => keyTypeOf(e.key) === type);
  if (sameType.length) {
    const listed = sameType.map((e) => `${fingerprintOf(e.key)} (line ${e.line})`).join(', ');
    return {
      ok: false,
      why: 'changed',
      message: `host key for ${name} CHANGED: the server offered ${offered}, but ${file} has ${listed}; possible man-in-the-middle. ` +
        `If the server's key was replaced on purpose, check the new fingerprint and replace that line`,
    };
  }
  const scan = port === 22 ? `ssh-keyscan ${host}` : `ssh-keyscan -p ${port} ${host}`;
  const others = trusted.length ? ` (it lists only ${[...new Set(trusted.map((e) => keyTypeOf(e.key)))].join(', ')} keys for it)` : '';
  return {
    ok: false,
    why: 'unknown',
    message: `host key for ${name} is not in ${file}${others}: the server offered ${offered}; ` +
      `add it with ${scan} >> ${file} after checking the fingerprint`,
  };
}

const ALGORITHMS_FOR_TYPE: Record<string, ServerHostKeyAlgorithm[]> = {
  'ssh-ed25519': ['ssh-ed25519'],
  'ecdsa-sha2-nistp256': ['ecdsa-sha2-nistp256'],
  'ecdsa-sha2-nistp384': ['ecdsa-sha2-nistp384'],
  'ecdsa-sha2-nistp521': ['ecdsa-sha2-nistp521'],
  'ssh-rsa': ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'],
  'ssh-dss': ['ssh-dss'],
};
const DEFAULT_ALGORITHMS: ServerHostKeyAlgorithm[] = ['ssh-ed25519', 'ecdsa-sha2-nistp256', 'ecdsa-sha2-nistp384', 'ecdsa-sha2-nistp521', 'rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'];

/**
 * Host key algorithms with the types known_hosts lists for this host first, as OpenSSH orders
 * them: a server with several host keys then shows the one we can check, not another.
 * Undefined (ssh2's default) when the host is not listed.
 */
export function hostKeyAlgorithms(entries: readonly KnownHost[], name: string): ServerHostKeyAlgorithm[] | undefined {
  const known = entries
    .filter((e) => e.marker === '' && matchesHost(e.patterns, name))
    .flatMap((e) => ALGORITHMS_FOR_TYPE[keyTypeOf(e.key)] ?? []);
  if (!known.length) return undefined;
  return [...new Set([...known, ...DEFAULT_ALGORITHMS])];
}
