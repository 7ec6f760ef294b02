// A real OpenSSH sshd on a loopback port, with a throwaway ed25519 host key and an
// authorized_keys file of its own, standing in for the SSH host of an `ssh` route.
// sshd wants to run as root (CI does); the login user is root, by key only.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort, waitFor } from './ports.js';
import { tmpDir, writeFile, writeSecret } from './tmp.js';

export const SSHD = '/usr/sbin/sshd';

export interface KeyPair {
  /** Private key file. */
  file: string;
  /** "ssh-ed25519 AAAA… comment" */
  pub: string;
}

/** ssh-keygen -t ed25519 -N '' into `file` (0600, owned by the caller). */
export function sshKeygen(file: string, comment = 'tidemail-test'): KeyPair {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  fs.rmSync(file, { force: true });
  fs.rmSync(`${file}.pub`, { force: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', file], { stdio: 'ignore' });
  return { file, pub: fs.readFileSync(`${file}.pub`, 'utf8').trim() };
}

/**
 * A client key the daemon can read after dropping root: 0600 and owned by `nobody` when we
 * are root (ssh-keygen writes it as root; writeSecret re-creates it for the run user).
 */
export function clientKey(dir: string): KeyPair {
  const kp = sshKeygen(path.join(dir, 'keygen', 'id_ed25519'));
  writeSecret(path.join(dir, 'secrets', 'id_ed25519'), fs.readFileSync(kp.file, 'utf8'));
  return { file: path.join(dir, 'secrets', 'id_ed25519'), pub: kp.pub };
}

export interface TestSshd {
  port: number;
  dir: string;
  /** The server's host key, "ssh-ed25519 AAAA…". */
  hostKey: string;
  /** A known_hosts line for this server (`[127.0.0.1]:PORT ssh-ed25519 AAAA…`). */
  knownHostsLine: string;
  logs(): string;
  waitForLog(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  stop(): Promise<void>;
}

const children = new Set<ChildProcess>();
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/** Starts sshd accepting `authorizedKeys` (public key lines) for root. */
export async function startSshd(authorizedKeys: string[], opts: { allowTcpForwarding?: boolean } = {}): Promise<TestSshd> {
  if (!fs.existsSync(SSHD)) throw new Error(`${SSHD} is missing: apt-get install openssh-server (.ci/run does)`);
  // Privilege separation needs this empty root-owned directory; a fresh install has not made it.
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = tmpDir('tidemail-sshd-');
  const host = sshKeygen(path.join(dir, 'ssh_host_ed25519_key'), 'tidemail-test-host');
  const authorized = writeFile(path.join(dir, 'authorized_keys'), authorizedKeys.join('\n') + '\n', 0o644);
  let lastError = '';
  // A free port can be taken between freePort() and sshd's bind; try a few.
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const config = writeFile(
      path.join(dir, 'sshd_config'),
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${host.file}`,
        `AuthorizedKeysFile ${authorized}`,
        `PidFile ${path.join(dir, 'sshd.pid')}`,
        'StrictModes no',
        'UsePAM no',
        'UseDNS no',
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        `AllowTcpForwarding ${opts.allowTcpForwarding === false ? 'no' : 'yes'}`,
        'PermitTTY no',
        'X11Forwarding no',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );
    const proc = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(proc);
    let out = '';
    let exited: number | null | undefined;
    proc.stdout!.on('data', (d) => (out += d));
    proc.stderr!.on('data', (d) => (out += d));
    const exitP = new Promise<void>((r) => proc.on('exit', (code) => { exited = code; children.delete(proc); r(); }));
    try {
      await waitFor('sshd listening', () => /Server listening on 127\.0\.0\.1 port/.test(out) || exited !== undefined, 10_000);
    } catch (err) {
      proc.kill('SIGKILL');
      throw new Error(`sshd did not start: ${(err as Error).message}\n${out}`);
    }
    if (exited !== undefined) {
      lastError = out;
      if (/Address already in use|Cannot bind/i.test(out)) continue;
      break;
    }
    return {
      port,
      dir,
      hostKey: host.pub.split(' ').slice(0, 2).join(' '),
      knownHostsLine: `[127.0.0.1]:${port} ${host.pub.split(' ').slice(0, 2).join(' ')}`,
      logs: () => out,
      waitForLog: (re, timeoutMs = 10_000) => waitFor(`sshd log ${re}`, () => re.exec(out), timeoutMs),
      stop: async () => {
        if (exited === undefined) proc.kill('SIGTERM');
        await exitP;
      },
    };
  }
  throw new Error(`sshd exited at start:\n${lastError}`);
}

/** Hashes every host name in a known_hosts file with the real `ssh-keygen -H`. */
export function hashKnownHosts(file: string): string {
  execFileSync('ssh-keygen', ['-H', '-f', file], { stdio: 'ignore' });
  fs.rmSync(`${file}.old`, { force: true });
  return fs.readFileSync(file, 'utf8');
}
