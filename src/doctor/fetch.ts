// Probe: each [[fetch]] account of a route that is online now, as the smarthost probe does for
// SMTP: the server answers, TLS verifies (STLS or implicit), our login is accepted and the
// mailbox can be listed by UIDL (what keep = true and the duplicate guard rely on). Read-only:
// STAT and UIDL, then RSET and QUIT — no RETR, no DELE, so nothing is fetched or deleted.

import fs from 'node:fs';
import { describeRead, secretFileProblem } from '../config/secret-file.js';
import { ConfigError } from '../errors.js';
import { readAccountPassword } from '../fetch/account.js';
import { Pop3Client, Pop3Error, Pop3TlsError } from '../fetch/pop3-client.js';
import type { FetchSpec, RouteProfile } from '../routes/profile.js';
import { fail, ok, skip, warn, type Finding } from './finding.js';
import type { LinkAnswer } from './links.js';

const TIMEOUT_MS = 15_000;

export async function probeFetch(routes: readonly RouteProfile[], links: readonly LinkAnswer[]): Promise<Finding[]> {
  const out: Finding[] = [];
  for (const r of routes) {
    const link = links.find((l) => l.route === r.name);
    for (const acct of r.fetch) {
      const area = `fetch ${acct.name}`;
      if (!link?.online) out.push(skip(area, `route ${r.name} offline (${link?.why ?? 'unknown'}): not probed`));
      else out.push(...(await probeAccount(acct, r.file, area)));
    }
  }
  return out;
}

async function probeAccount(acct: FetchSpec, file: string, area: string): Promise<Finding[]> {
  const out: Finding[] = [];
  const where = `${acct.host}:${acct.port}`;
  const portHint = 'is the port right (995 tls = "implicit", 110 tls = "starttls")?';
  let password: string;
  let from = '';
  const problem = acct.passwordFile ? secretFileProblem(acct.passwordFile) : null;
  if (problem) return [fail(area, `password file: ${problem.problem}`, problem.fix)];
  try {
    const p = await readAccountPassword(acct);
    password = p.password;
    if (p.read) from = ` (password from ${describeRead(p.read)})`;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return [fail(area, err.message, acct.passwordFile ? `put the password on the first line of ${acct.passwordFile}, owned by the daemon's user, mode 0600` : `set password_file in ${file}`)];
  }
  let client: Pop3Client;
  try {
    client = await Pop3Client.connect({ host: acct.host, port: acct.port, tls: acct.tls, ...(acct.caFile ? { ca: fs.readFileSync(acct.caFile) } : {}), timeoutMs: TIMEOUT_MS });
  } catch (err) {
    if (err instanceof Pop3TlsError) {
      return [fail(area, err.message, acct.caFile ? `check that ${acct.caFile} is the CA that signed the server's certificate` : `for a private CA set tls_ca_file in the [[fetch]] of ${file}; ${portHint}`)];
    }
    if (err instanceof Pop3Error && err.response !== undefined) return [fail(area, `${where} refused STLS or greeted with an error: ${err.response}`, `use tls = "implicit" on port 995 in ${file}, or ask the provider`)];
    return [fail(area, (err as Error).message, `check server in the [[fetch]] of ${file}; ${portHint} try: nc -vz ${acct.host} ${acct.port}`)];
  }
  try {
    out.push(ok(area, `${where} answers`));
    out.push(acct.tls === 'none' ? warn(area, 'TLS off for this account (tls = "none"): the password crosses the network readable', `use tls = "starttls" or "implicit" in ${file}, unless the link itself is encrypted or trusted`) : ok(area, `TLS ${acct.tls === 'implicit' ? '(implicit)' : '(STLS)'} handshake verified`));
    try {
      await client.login(acct.user, password, acct.auth);
    } catch (err) {
      if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      const temporary = /\[(SYS\/TEMP|IN-USE|LOGIN-DELAY)\]/i.test(err.response);
      if (temporary) out.push(warn(area, `login as ${acct.user} not possible now: ${err.response}`, 'another client may hold the mailbox; try again later'));
      else out.push(fail(area, `login as ${acct.user} refused: ${err.response}${from}`, acct.passwordFile ? `put the right password in ${acct.passwordFile} (mode 0600), or fix user in ${file}` : `fix user or password in ${file}`));
      return out;
    }
    out.push(ok(area, `login as ${acct.user} accepted (test login; nothing fetched or deleted)`));
    const st = await client.stat();
    try {
      const ids = await client.uidl(64 * 1024 + st.count * 128);
      out.push(ok(area, `UIDL works: ${ids.size} message(s), ${st.size} bytes waiting`));
    } catch (err) {
      if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      out.push(acct.keep
        ? warn(area, `${where} has no UIDL (${err.response}): messages are told apart by their headers (TOP), which is slower and can miss exact copies`, `set keep = false in ${file} if the server may delete what was fetched`)
        : ok(area, `no UIDL (${err.response}); keep = false, so each message is deleted once it is queued`));
    }
    await client.rset().catch(() => undefined);
    await client.quit().catch(() => undefined);
  } catch (err) {
    out.push(fail(area, `POP3 session with ${where} failed: ${(err as Error).message}`, 'run tidemail check again; if it persists, look at the POP3 server\'s log'));
  } finally {
    client.close();
  }
  return out;
}
