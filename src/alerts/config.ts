// [alerts]: a warning that does not travel through the mail queue — a command run or a URL
// POSTed when mail has waited too long, a route keeps failing, or a POP3 account is FAILING.
// A warning mailed through a stuck queue never arrives.

import fs from 'node:fs';
import path from 'node:path';
import type { ConfigReader } from '../config/reader.js';
import { secretFileProblem } from '../config/secret-file.js';

export interface AlertsConfig {
  /** Mail (not on hold) older than this is an alert; null: not watched. */
  mailWaitingMs: number | null;
  /** A route whose deliveries have failed, with none succeeding, for this long; null: not watched. */
  routeFailingMs: number | null;
  /** A fetch account FAILING for this long ("0s": at once); null: not watched. */
  fetchFailingMs: number | null;
  /** The same alert again at most this often while it lasts. */
  repeatMs: number;
  /** Also run the action when a condition has cleared. */
  cleared: boolean;
  /** argv run without a shell, the alert as JSON on stdin and TIDEMAIL_ALERT_* variables. */
  command: string[] | null;
  /** POSTed as JSON; https certificates verified. */
  url: string | null;
  /** Bearer token for url (mode 0600): read at load, while we may be root, and again when it changes. */
  tokenFile: string | null;
  token: string | null;
  /** Extra CA for an https url (a private CA). */
  caFile: string | null;
  /** How often the conditions are looked at. */
  intervalMs: number;
  /** Deadline for one command run or POST. */
  timeoutMs: number;
}

export const defaultAlerts = (): AlertsConfig => ({
  mailWaitingMs: null, routeFailingMs: null, fetchFailingMs: null, repeatMs: 6 * 3_600_000, cleared: true,
  command: null, url: null, tokenFile: null, token: null, caFile: null, intervalMs: 30_000, timeoutMs: 15_000,
});

export function loadAlerts(top: ConfigReader): AlertsConfig {
  const a = top.sub('alerts');
  const out = defaultAlerts();
  if (!Object.keys(a.table).length) {
    a.rejectUnknown();
    return out;
  }
  const opt = (key: string) => (a.has(key) ? a.duration(key, 0) : null);
  out.mailWaitingMs = opt('mail_waiting');
  out.routeFailingMs = opt('route_failing');
  out.fetchFailingMs = opt('fetch_failing');
  out.repeatMs = a.duration('repeat', out.repeatMs);
  if (out.repeatMs < 1000) a.fail('repeat', 'is shorter than a second', 'write e.g. repeat = "6h" (the same alert again at most this often)');
  out.cleared = a.bool('cleared', out.cleared);
  out.intervalMs = a.duration('interval', out.intervalMs);
  if (out.intervalMs < 1000) a.fail('interval', 'is shorter than a second', 'write e.g. interval = "30s"');
  out.timeoutMs = a.duration('timeout', out.timeoutMs);
  if (a.has('command')) {
    out.command = a.stringList('command', []);
    if (!out.command.length || !out.command[0]) a.fail('command', 'is empty', 'write e.g. command = ["/usr/local/bin/notify-admin", "--from", "tidemail"] (run without a shell)');
    if (!path.isAbsolute(out.command[0]!)) a.fail('command', `"${out.command[0]}" is not an absolute path`, `write the full path, e.g. command = ["/usr/bin/${path.basename(out.command[0]!)}"] (no shell, no $PATH search)`);
  }
  if (a.has('url')) {
    const u = a.string('url')!;
    let parsed: URL;
    try {
      parsed = new URL(u);
    } catch {
      return a.fail('url', `"${u}" is not a URL`, 'write e.g. url = "https://ntfy.sh/my-tidemail-alerts"');
    }
    if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') a.fail('url', `is ${parsed.protocol} — only https (or http) URLs can be POSTed to`, 'write e.g. url = "https://ntfy.sh/my-tidemail-alerts"');
    if (parsed.username || parsed.password) a.fail('url', 'carries a user name or password, which would end up in logs and config show', 'put the token in a 0600 file and name it in token_file');
    out.url = u;
  }
  if (a.has('token_file')) {
    if (!out.url) return a.fail('token_file', 'is set without url', 'add url = "https://…" or remove token_file');
    const u = new URL(out.url);
    const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(u.hostname);
    // A bearer token over plain http is readable by anyone on the path.
    if (u.protocol === 'http:' && !loopback) a.fail('url', 'is http:// while token_file is set: the token would cross the network in clear', 'use an https:// URL');
    out.tokenFile = path.resolve(path.dirname(a.file), a.string('token_file')!);
    const problem = secretFileProblem(out.tokenFile);
    if (problem) a.fail('token_file', problem.problem, problem.fix);
    out.token = fs.readFileSync(out.tokenFile, 'utf8').trim();
    if (!out.token) a.fail('token_file', `file ${out.tokenFile} is empty`, `write the token into it on one line (it stays mode 0600)`);
  }
  if (a.has('tls_ca_file')) {
    out.caFile = path.resolve(path.dirname(a.file), a.string('tls_ca_file')!);
    if (!fs.existsSync(out.caFile)) a.fail('tls_ca_file', `file ${out.caFile} does not exist`, 'point it at the PEM file of the CA that signed the server certificate');
  }
  if (!out.command && !out.url) a.fail(undefined, 'has no action', 'add command = ["/usr/local/bin/notify-admin"] or url = "https://ntfy.sh/my-topic" to [alerts]');
  if (out.mailWaitingMs === null && out.routeFailingMs === null && out.fetchFailingMs === null) {
    a.fail(undefined, 'watches nothing', 'add at least one of mail_waiting = "4h", route_failing = "1h", fetch_failing = "0s" to [alerts]');
  }
  a.rejectUnknown();
  return out;
}
