// Alert actions: a command (argv, no shell, the daemon's user: it runs after the privilege drop)
// with the alert as JSON on stdin and TIDEMAIL_ALERT_* in its environment, and/or a JSON POST to
// a URL (https certificates verified, no redirects followed). Each is bounded by [alerts] timeout.
// The bearer token comes from its 0600 file (re-read when it changes, as route passwords are:
// src/config/secret-file.ts) and is never logged or shown.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { AlertsConfig } from './config.js';
import { currentSecret } from '../config/secret-file.js';

export interface AlertEvent {
  kind: 'mail-waiting' | 'route-failing' | 'fetch-failing';
  /** What it is about: "queue", a route name, a fetch account. */
  subject: string;
  /** firing: new; repeat: still so after [alerts] repeat; cleared: over. */
  state: 'firing' | 'repeat' | 'cleared';
  /** One line for a person. */
  message: string;
  /** When the condition started (ms). */
  since: number;
  at: number;
  host: string;
}

export interface ActionResult {
  action: 'command' | 'url';
  ok: boolean;
  /** "exit 0", "HTTP 204", or what went wrong. */
  detail: string;
}

export async function runActions(cfg: AlertsConfig, ev: AlertEvent): Promise<ActionResult[]> {
  const body = JSON.stringify({ ...ev, since: new Date(ev.since).toISOString(), at: new Date(ev.at).toISOString() });
  const jobs: Promise<ActionResult>[] = [];
  if (cfg.command) jobs.push(runCommand(cfg.command, cfg.timeoutMs, ev, body));
  if (cfg.url) jobs.push(post(cfg, body));
  return Promise.all(jobs);
}

function runCommand(argv: string[], timeoutMs: number, ev: AlertEvent, body: string): Promise<ActionResult> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      TIDEMAIL_ALERT_KIND: ev.kind,
      TIDEMAIL_ALERT_STATE: ev.state,
      TIDEMAIL_ALERT_SUBJECT: ev.subject,
      TIDEMAIL_ALERT_MESSAGE: ev.message,
      TIDEMAIL_ALERT_SINCE: new Date(ev.since).toISOString(),
      TIDEMAIL_ALERT_HOST: ev.host,
    };
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['pipe', 'ignore', 'pipe'], shell: false });
    } catch (err) {
      return resolve({ action: 'command', ok: false, detail: `cannot run ${argv[0]}: ${(err as Error).message}` });
    }
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-300)));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ action: 'command', ok: false, detail: `cannot run ${argv[0]}: ${err.code ?? err.message}` });
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const tail = stderr.trim().split('\n').pop();
      if (code === 0) resolve({ action: 'command', ok: true, detail: 'exit 0' });
      else resolve({ action: 'command', ok: false, detail: `${signal ? `killed (${signal === 'SIGKILL' ? 'timeout' : signal})` : `exit ${code}`}${tail ? `: ${tail}` : ''}` });
    });
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(body + '\n');
  });
}

async function post(cfg: AlertsConfig, body: string): Promise<ActionResult> {
  // http/https (and tls for a CA file) load at the first POST, not with the daemon: an idle
  // daemon with no alert firing never needs them (~1.3 MB of RSS, issue 17).
  const url = new URL(cfg.url!);
  const mod = url.protocol === 'https:' ? await import('node:https') : await import('node:http');
  const rootCertificates = cfg.caFile ? (await import('node:tls')).rootCertificates : [];
  return new Promise((resolve) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), 'user-agent': 'tidemail-alerts' };
    try {
      // The value read at load (as root, perhaps), or the file's new one once it changes.
      if (cfg.tokenFile) headers.authorization = `Bearer ${currentSecret(cfg.tokenFile, cfg.token ?? '', (t) => t.trim()).value}`;
    } catch (err) {
      return resolve({ action: 'url', ok: false, detail: `cannot read token_file ${cfg.tokenFile}: ${(err as NodeJS.ErrnoException).code}` });
    }
    let ca: string[] | undefined;
    try {
      ca = cfg.caFile ? [...rootCertificates, fs.readFileSync(cfg.caFile, 'utf8')] : undefined;
    } catch (err) {
      return resolve({ action: 'url', ok: false, detail: `cannot read tls_ca_file ${cfg.caFile}: ${(err as NodeJS.ErrnoException).code}` });
    }
    const req = mod.request(url, { method: 'POST', headers, timeout: cfg.timeoutMs, ...(ca ? { ca } : {}) }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      res.on('end', () => resolve({ action: 'url', ok: code >= 200 && code < 300, detail: `HTTP ${code}` }));
      res.on('error', () => resolve({ action: 'url', ok: false, detail: `HTTP ${code}, reply cut off` }));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${Math.round(cfg.timeoutMs / 1000)}s`), { code: 'ETIMEDOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ action: 'url', ok: false, detail: `${url.host}: ${err.code ?? err.message}${err.code && err.message && !err.message.includes(err.code) ? ` (${err.message})` : ''}` }));
    req.end(body);
  });
}
