// OAuth2 for SMTP AUTH: XOAUTH2 (Google's, also Microsoft 365) and OAUTHBEARER (RFC 7628).
//
// The long-lived refresh token lives in a 0600 file; an access token is fetched from the
// provider's token endpoint (RFC 6749 6: POST grant_type=refresh_token, form-encoded) and kept
// in memory until 60 s before it runs out. When the provider rotates the refresh token, the new
// one is saved atomically — over the file when its directory lets us, else in the state directory
// (oauth2-token-store.ts: which copy wins, and why the file is never rewritten in place). A refused access token is refreshed once and offered again on
// the same connection. Every failure here is a login failure, which smtp.ts turns into a
// tempfail: mail waits for the user to fix the token, it is never bounced for it.

import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { TidemailError } from '../errors.js';
import { log } from '../log/log.js';
import { redactAuthReply } from '../log/auth-echo.js';
import { readRefreshToken, saveRefreshToken } from './oauth2-token-store.js';
import type { SmtpAuthSpec } from '../routes/profile.js';

export type OAuth2Spec = Extract<SmtpAuthSpec, { kind: 'oauth2' }>;

/** The token endpoint refused or failed; the message says what to do about it. */
export class OAuth2TokenError extends TidemailError {
  override name = 'OAuth2TokenError';
}

/** Refresh this long before the provider's expiry, so a token never dies mid-session. */
const REFRESH_MARGIN_MS = 60_000;
/** When the provider does not say (expires_in is RECOMMENDED, RFC 6749 5.1). */
const DEFAULT_LIFETIME_S = 3600;
const TOKEN_TIMEOUT_MS = 30_000;

/**
 * Logs in on a connected SMTPConnection with an access token for `auth`.
 * @throws Error with a message for the log and the queue ("… revoked or expired (invalid_grant) …",
 *   "the server refused a freshly issued access token …"); the caller defers the mail.
 */
export async function oauth2Login(conn: SMTPConnection, auth: OAuth2Spec): Promise<void> {
  const source = tokenSourceFor(auth);
  const token = await source.accessToken();
  const first = await offerToken(conn, auth, token);
  if (first.kind === 'ok') return;
  if (first.kind === 'failed') throw new Error(first.reply);
  // Tokens can be revoked before they expire (password change, admin action): one fresh try.
  source.invalidate(token);
  const fresh = await source.accessToken();
  const second = await offerToken(conn, auth, fresh);
  if (second.kind === 'ok') return;
  if (second.kind === 'failed') throw new Error(second.reply);
  throw new Error(
    `the server refused a freshly issued access token: ${second.reply} — check that auth.user (${auth.user}) is the account ` +
      `that authorized the token and that its scope${auth.scope ? ` ("${auth.scope}")` : ''} allows sending mail by SMTP`,
  );
}

// ---------------------------------------------------------------------------------------------
// SASL: the mechanism's initial response, and reading the server's verdict.

type Attempt = { kind: 'ok' } | { kind: 'rejected' | 'failed'; reply: string };

interface AuthReply {
  status: number;
  text: string;
  response: string;
}

type Send = (line: string) => Promise<AuthReply>;

/** RFC 5801 3: "," and "=" in a GS2 authzid are escaped. */
function gs2Escape(s: string): string {
  return s.replace(/=/g, '=3D').replace(/,/g, '=2C');
}

export function initialResponse(mechanism: OAuth2Spec['mechanism'], user: string, token: string, host?: string, port?: number): string {
  const raw =
    mechanism === 'XOAUTH2'
      ? `user=${user}\x01auth=Bearer ${token}\x01\x01`
      : // RFC 7628 3.1: gs2-header, then key=value pairs each ended by ^A, and a final ^A.
        `n,a=${gs2Escape(user)},\x01${host ? `host=${host}\x01` : ''}${port ? `port=${port}\x01` : ''}auth=Bearer ${token}\x01\x01`;
  return Buffer.from(raw, 'utf8').toString('base64');
}

/** The JSON error a server sends in its 334 challenge after a refused token, for the log. */
function describeChallenge(b64: string): string {
  try {
    const j = JSON.parse(Buffer.from(b64.trim(), 'base64').toString('utf8')) as Record<string, unknown>;
    const parts = Object.entries(j).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
    return parts.join(' ');
  } catch {
    return '';
  }
}

async function offerToken(conn: SMTPConnection, auth: OAuth2Spec, token: string): Promise<Attempt> {
  const target = conn.options as { host?: string; port?: number };
  const host = target.host && !net.isIP(target.host) ? target.host : undefined;
  let outcome: Attempt | undefined;
  // The server's words become the mail's last error, shown to every local user: not an echo of the token (log/auth-echo.ts).
  const initial = initialResponse(auth.mechanism, auth.user, token, host, target.port);
  const said = (text: string) => redactAuthReply(text, [initial, token]);
  try {
    await customLogin(conn, auth.mechanism, auth.user, async (send) => {
      const reply = await send(`AUTH ${auth.mechanism} ${initial}`);
      if (reply.status === 235) return;
      if (reply.status === 334) {
        // RFC 7628 3.2.3: the server's error comes as a challenge; the client answers ^A
        // (OAUTHBEARER) or an empty line (XOAUTH2) and then gets the final failure reply.
        const detail = said(describeChallenge(reply.text));
        const fin = await send(auth.mechanism === 'XOAUTH2' ? '' : 'AQ==');
        if (fin.status === 235) return;
        outcome = { kind: 'rejected', reply: `${said(oneLine(fin.response))}${detail ? ` (${detail})` : ''}` };
      } else if (reply.status === 535) {
        outcome = { kind: 'rejected', reply: said(oneLine(reply.response)) };
      } else if (reply.status === 504) {
        outcome = { kind: 'failed', reply: `${said(oneLine(reply.response))} (the server does not offer AUTH ${auth.mechanism}; try mechanism = "${auth.mechanism === 'XOAUTH2' ? 'OAUTHBEARER' : 'XOAUTH2'}" in auth.oauth2)` };
      } else {
        outcome = { kind: 'failed', reply: said(oneLine(reply.response)) };
      }
      throw new Error(outcome.reply);
    });
    return { kind: 'ok' };
  } catch (err) {
    return outcome ?? { kind: 'failed', reply: said((err as Error).message) };
  }
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}

interface CustomAuthContext {
  sendCommand(cmd: string): Promise<AuthReply>;
}

/**
 * Runs `exchange` as the SASL mechanism of one login() on the connection. nodemailer offers
 * custom mechanisms through its `customAuth` option; smtp.ts builds the connection without it,
 * so the handler is registered on the connection's map of handlers here.
 */
function customLogin(conn: SMTPConnection, mechanism: string, user: string, exchange: (send: Send) => Promise<void>): Promise<void> {
  const handlers = (conn as unknown as { customAuth?: unknown }).customAuth;
  if (!(handlers instanceof Map)) return Promise.reject(new Error(`this nodemailer has no custom SASL support; cannot speak AUTH ${mechanism}`));
  handlers.set(mechanism, (ctx: CustomAuthContext) => exchange((line) => ctx.sendCommand(line)));
  return new Promise((resolve, reject) => {
    conn.login({ type: 'custom', method: mechanism, user, pass: '' } as SMTPConnection.AuthenticationCredentials, (err) => (err ? reject(err) : resolve()));
  });
}

// ---------------------------------------------------------------------------------------------
// Access tokens: refresh, cache, rotate.

interface TokenResponse {
  access_token?: unknown;
  expires_in?: unknown;
  refresh_token?: unknown;
  error?: unknown;
  error_description?: unknown;
}

/** One account's tokens: the cached access token and the refresh token behind it. */
export class TokenSource {
  private cached: { token: string; refreshAt: number } | null = null;
  private pending: Promise<string> | null = null;
  /** A rotated refresh token that could not be saved, and the token it replaces. */
  private unsaved: { token: string; replaces: string } | null = null;
  private readonly auth: OAuth2Spec;
  private readonly now: () => number;

  constructor(auth: OAuth2Spec, now: () => number = Date.now) {
    this.auth = auth;
    this.now = now;
  }

  /** A valid access token: the cached one, or a fresh one (one request at a time). */
  accessToken(): Promise<string> {
    if (this.cached && this.now() < this.cached.refreshAt) return Promise.resolve(this.cached.token);
    this.pending ??= this.refresh().finally(() => (this.pending = null));
    return this.pending;
  }

  /** Forget `token` (the server refused it), so the next accessToken() asks the provider. */
  invalidate(token: string): void {
    if (this.cached?.token === token) this.cached = null;
  }

  private async refresh(): Promise<string> {
    const a = this.auth;
    let stored: string;
    try {
      stored = readRefreshToken(a.refreshTokenFile).token;
    } catch (err) {
      throw new OAuth2TokenError(`cannot read auth.oauth2.refresh_token_file ${a.refreshTokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
    // What is stored wins unless it is still the token that a failed save should have replaced.
    const refreshToken = this.unsaved && this.unsaved.replaces === stored ? this.unsaved.token : stored;
    if (!refreshToken) {
      throw new OAuth2TokenError(`the refresh token file ${a.refreshTokenFile} is empty: authorize tidemail with the provider and write the refresh token into it (mode 0600)`);
    }
    const form = new URLSearchParams({ grant_type: 'refresh_token', client_id: a.clientId, refresh_token: refreshToken });
    if (a.clientSecretFile) form.set('client_secret', readTokenFile(a.clientSecretFile, 'client_secret_file'));
    if (a.scope) form.set('scope', a.scope);
    checkTokenUrl(a.tokenUrl);
    const started = this.now();
    let res: Response;
    try {
      res = await fetch(a.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form,
        signal: AbortSignal.timeout(TOKEN_TIMEOUT_MS),
      });
    } catch (err) {
      const cause = (err as { cause?: { message?: string; code?: string } }).cause;
      throw new OAuth2TokenError(`cannot reach the OAuth2 token endpoint ${a.tokenUrl}: ${cause?.code ?? cause?.message ?? (err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    let body: TokenResponse = {};
    try {
      body = JSON.parse(text) as TokenResponse;
    } catch {
      // handled below: no JSON is as bad as no token
    }
    if (!res.ok || typeof body.access_token !== 'string' || !body.access_token) {
      // The provider's words become the mail's last error, shown to every local user: not an
      // echo of the form we posted (a proxy's error page, an error_description quoting it).
      const said = (t: string) => redactAuthReply(t, [refreshToken, form.get('client_secret') ?? '']);
      throw new OAuth2TokenError(this.describeRefusal(res.status, body, text, said));
    }
    const lifetimeS = Number(body.expires_in ?? DEFAULT_LIFETIME_S);
    const lifetimeMs = (Number.isFinite(lifetimeS) && lifetimeS > 0 ? lifetimeS : DEFAULT_LIFETIME_S) * 1000;
    // Count from when we asked: the provider's clock started no later than that.
    this.cached = { token: body.access_token, refreshAt: started + lifetimeMs - REFRESH_MARGIN_MS };
    if (typeof body.refresh_token === 'string' && body.refresh_token && body.refresh_token !== refreshToken) {
      this.saveRotated(body.refresh_token, refreshToken === stored ? stored : this.unsaved!.replaces);
    } else if (this.unsaved && this.unsaved.replaces !== stored) {
      this.unsaved = null;
    }
    log.info(null, 'oauth2 access token refreshed', { user: a.user, expires_in: Math.round(lifetimeMs / 1000) });
    return body.access_token;
  }

  /** `said` redacts what the provider wrote (not our own words: file paths, the scope URL). */
  private describeRefusal(status: number, body: TokenResponse, text: string, said: (t: string) => string): string {
    const a = this.auth;
    const error = typeof body.error === 'string' ? said(body.error) : '';
    const desc = typeof body.error_description === 'string' ? `: ${said(body.error_description)}` : '';
    switch (error) {
      case 'invalid_grant':
        return (
          `the refresh token in ${a.refreshTokenFile} was revoked or expired (invalid_grant${desc}): re-authorize tidemail for ${a.user} ` +
          `with the provider (see the comments in routes/gmail.toml or routes/outlook.toml) and write the new refresh token to ${a.refreshTokenFile} (mode 0600); ` +
          `the mail stays queued until then`
        );
      case 'invalid_client':
      case 'unauthorized_client':
        return `the token endpoint ${a.tokenUrl} refused the OAuth client (${error}${desc}): check auth.oauth2.client_id${a.clientSecretFile ? ` and ${a.clientSecretFile}` : ' (does the app need a client_secret_file?)'}`;
      case 'invalid_scope':
        return `the token endpoint ${a.tokenUrl} refused the scope "${a.scope ?? ''}" (invalid_scope${desc}): fix auth.oauth2.scope`;
      case '':
        return `the token endpoint ${a.tokenUrl} answered HTTP ${status} without an access token${text ? `: ${said(oneLine(text)).slice(0, 200)}` : ''}`;
      default:
        return `the token endpoint ${a.tokenUrl} answered HTTP ${status} ${error}${desc}`;
    }
  }

  private saveRotated(token: string, replaces: string): void {
    const file = this.auth.refreshTokenFile;
    try {
      const where = saveRefreshToken(file, token);
      this.unsaved = null;
      log.info(null, 'oauth2 refresh token rotated and saved', { user: this.auth.user, file: where, ...(where !== file ? { for: file } : {}) });
    } catch (err) {
      // Keep using it from memory; the old one in the file may stop working once this is used.
      this.unsaved = { token, replaces };
      log.error(null, 'oauth2 refresh token rotated but not saved', {
        user: this.auth.user,
        file,
        error: `${(err as NodeJS.ErrnoException).code ?? (err as Error).message} — make the state directory writable by the tidemail user, or the next restart may need a new authorization`,
      });
    }
  }
}

/** Plain http is only for a token endpoint on this machine (tests, a local proxy). */
function checkTokenUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new OAuth2TokenError(`auth.oauth2.token_url "${url}" is not a URL`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127\./.test(host);
  if (u.protocol === 'https:' || (u.protocol === 'http:' && loopback)) return;
  throw new OAuth2TokenError(`auth.oauth2.token_url "${url}" must be https (the refresh token would travel in clear)`);
}

function readTokenFile(file: string, key: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new OAuth2TokenError(`cannot read auth.oauth2.${key} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
}

// One token source per account for the whole process. smtp-auth.ts calls oauth2Login() with the
// route's spec only, so the cache cannot live in a transport; keyed by everything that makes
// a token, it survives reloads and is shared by the routes that use the same account.
const sources = new Map<string, TokenSource>();

export function tokenSourceFor(auth: OAuth2Spec): TokenSource {
  const key = [auth.tokenUrl, auth.clientId, auth.clientSecretFile ?? '', auth.user, auth.refreshTokenFile, auth.scope ?? ''].join('\0');
  let s = sources.get(key);
  if (!s) sources.set(key, (s = new TokenSource(auth)));
  return s;
}
