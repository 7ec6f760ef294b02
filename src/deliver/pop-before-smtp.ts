// SMTP-after-POP: some old ISPs relay only for addresses that logged in by POP3 a little
// earlier. Before a new SMTP connection we log in (USER/PASS or APOP), QUIT without touching
// the mailbox, and remember the success for a few minutes so not every connection pays for it.

import { Pop3Client } from '../fetch/pop3-client.js';
import { log } from '../log/log.js';
import type { PopBeforeSmtpSpec } from '../routes/profile.js';

/** Servers keep the address authorized for 5–30 minutes after a login; stay well inside that. */
export const REMEMBER_LOGIN_MS = 5 * 60_000;
const TIMEOUT_MS = 30_000;

// Per process, like the ISP's memory of our address. factory.ts hands us only the spec, so the
// record of recent logins lives here, keyed by server and user.
const lastLogin = new Map<string, number>();
const inFlight = new Map<string, Promise<void>>();

/**
 * Logs in to the route's POP3 server unless that happened less than REMEMBER_LOGIN_MS ago.
 * @throws Error naming the server and the reason (refused password, TLS, unreachable); smtp.ts
 *   logs it as "SMTP-after-POP login failed" and defers the mail.
 */
export function popBeforeSmtp(spec: PopBeforeSmtpSpec, now: () => number = Date.now): Promise<void> {
  const key = `${spec.host}:${spec.port}/${spec.tls}/${spec.user}`;
  const at = lastLogin.get(key);
  if (at !== undefined && now() - at < REMEMBER_LOGIN_MS) return Promise.resolve();
  let p = inFlight.get(key);
  if (!p) {
    p = loginOnce(spec).then(
      () => {
        lastLogin.set(key, now());
        inFlight.delete(key);
      },
      (err: unknown) => {
        lastLogin.delete(key);
        inFlight.delete(key);
        throw err;
      },
    );
    inFlight.set(key, p);
  }
  return p;
}

async function loginOnce(spec: PopBeforeSmtpSpec): Promise<void> {
  const where = `${spec.host}:${spec.port}`;
  const client = await Pop3Client.connect({ host: spec.host, port: spec.port, tls: spec.tls, timeoutMs: TIMEOUT_MS });
  try {
    await client.login(spec.user, spec.password);
  } catch (err) {
    client.close();
    const e = err as Error & { response?: string };
    // A refusal names the file to fix; anything else (network, TLS) speaks for itself.
    throw new Error(e.response !== undefined ? `POP3 server ${where} refused the login as ${spec.user}: ${e.response} (check pop_before_smtp.user and ${spec.passwordFile})` : e.message, { cause: err });
  }
  // The login is what counts; a failing QUIT does not undo it.
  await client.quit().catch(() => undefined);
  log.info(null, 'pop-before-smtp login ok', { server: where, user: spec.user, tls: spec.tls });
}
