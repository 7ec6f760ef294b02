// What a failed SMTP session means for the message: the result of a failure to set up a session
// (connectFailure, with the log line that names the cause and the fix) and of a server's reply
// (resultOf); isNetworkFailure tells the path's failures, worth another try within seconds, from
// the server's answers.

import { log } from '../log/log.js';
import type { SmtpClientSpec } from '../routes/profile.js';
import { describeAuthFailure } from './smtp-auth.js';
import { DEADLINE_CODE, STALL_CODE } from './smtp-deadline.js';
import type { SmtpHop } from './smtp.js';
import type { DeliveryResult, SmtpErrorLike as BaseSmtpError } from './transport.js';

export interface SmtpErrorLike extends BaseSmtpError {
  /** Failed in or right after the STARTTLS handshake (set by SmtpTransport.open). */
  duringTls?: boolean;
}

/** open() refused to send AUTH over an unencrypted session. */
export const PLAIN_AUTH_CODE = 'EPLAINAUTH';

export function connectFailure(route: string, spec: SmtpClientSpec, hop: SmtpHop, err: SmtpErrorLike): DeliveryResult {
  if (err.code === PLAIN_AUTH_CODE) {
    const text = `${err.message} (fix the server's TLS, or set allow_plain_auth = true in route ${route} if this link is trusted)`;
    log.warn(null, 'AUTH refused without TLS', { route, error: text });
    return { outcome: 'tempfail', message: text, remote: hop.host };
  }
  if (err.code === STALL_CODE) {
    log.warn(null, 'link passes nothing', { route, error: err.message });
    return { outcome: 'tempfail', message: err.message, remote: hop.host, retrySoon: true };
  }
  if (err.code === DEADLINE_CODE) {
    log.warn(null, 'next hop too slow', { route, error: err.message });
    return { outcome: 'tempfail', message: err.message, remote: hop.host };
  }
  if (err.code === 'EAUTH' && spec.auth) {
    const text = describeAuthFailure(spec.auth, hop.label, err);
    log.warn(null, 'smarthost login failed', { route, error: text });
    // A wrong password is our configuration, not the recipient's fault: defer, never bounce.
    return { outcome: 'tempfail', message: text, remote: hop.host };
  }
  // Tunnels (ssh, wrapper) report their own errors; only a real TLS failure is called one.
  const tls = err.code === 'ETLS' || (!hop.openStream && /certificate|self[- ]signed|\bTLS\b|\bSSL\b/.test(err.message));
  const text = tls
    ? `TLS to ${hop.label} failed: ${err.message} (certificates are verified; set tls_ca_file for a private CA)`
    : `cannot connect to ${hop.label}: ${err.message}`;
  log.warn(null, 'next hop unreachable', { route, error: text });
  // Any failure before a server has judged the message is temporary; one of the network
  // rather than of the server is worth another try within seconds.
  return { outcome: 'tempfail', message: text, remote: hop.host, ...(isNetworkFailure(err) ? { retrySoon: true } : {}) };
}

/**
 * The path failed, not the server: reset, unreachable, timed out. A refusal (ECONNREFUSED) is
 * the host's answer and waits the normal back-off. nodemailer and dial.ts carry the errno only
 * in the text, hence the pattern.
 */
const NETWORK_ERRNO = /\b(ECONNRESET|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|EPIPE|ECONNABORTED|ENETDOWN|EHOSTDOWN)\b|host unreachable|network unreachable|\(connect_timeout\)/;
export function isNetworkFailure(err: SmtpErrorLike): boolean {
  if (err.responseCode) return false; // the server answered
  return NETWORK_ERRNO.test(`${err.code ?? ''} ${err.message}`);
}

/** An SMTP error → result: 5xx is permanent, anything else (4xx, network) temporary. */
export function resultOf(err: SmtpErrorLike, host: string): DeliveryResult {
  const text = (err.response ?? err.message).replace(/\s+/g, ' ').trim();
  const code = err.responseCode ?? 0;
  return { outcome: code >= 500 && code < 600 ? 'permfail' : 'tempfail', message: text, remote: host };
}
