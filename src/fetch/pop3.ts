// The fetch job: log in to one POP3 account, hand every message not fetched before to the
// queue, remember it, and (keep = false) delete it on the server.
//
// Order per message, for "no loss, at most one duplicate" under kill -9 or a dropped link:
//   RETR (streamed into submit) → submit resolves (queued, fsync'd) → uidls.add (fsync'd)
//   → DELE (only takes effect at QUIT, RFC 1939 6).
// Dying before the add: the message is fetched again next time (the one in flight). Dying
// after it but before QUIT: the server keeps the message, we skip it by its UIDL (and, for
// keep = false, DELE it in the next session: the add marked it dele_pending until QUIT).
//
// Servers without UIDL (RFC 1939 7 makes it optional): the id is made from `TOP n 0`
// headers — "top:" + sha256 of the Message-ID, or, without one, of the header block minus
// the lines servers rewrite (Status, X-Status, X-UID, X-Keywords, Content-Length); repeats
// within one listing get "#2", "#3"… When TOP is missing too, keep = false fetches and deletes
// everything (a connection lost before QUIT then duplicates that session's messages — the
// only way to read such a server at all), and keep = true is refused with an error.
//
// Larger than max_size: oversize = "skip" leaves the message on the server; "headers" fetches
// its header section with TOP n 0 and delivers that, with a note saying so. Either way it is
// remembered as skipped and never deleted.
//
// A server that lies about sizes: each RETR is capped at its LIST size + 10 % + 64 KiB (LIST sizes
// differ a little from what is sent: line endings, dot-stuffing) and at max_size and
// [smtp] max_message_size, whichever is lowest (retrLimit). Past it the connection is cut at
// once (no QUIT, so no DELE of this session takes effect), the partial message is rolled back by
// submit, and its UIDL is not remembered. The result's `overLimit` names it; the scheduler then
// holds it back (`suspects`, tried last and only by `tidemail fetch`) so the rest of the mailbox
// still flows and the bad one costs no more bandwidth. LIST and UIDL are capped by STAT's count.
//
// Recipients: deliver_to, or read from the headers for a multidrop mailbox (recipients.ts); the
// header section is read before submit is called, so the envelope is known up front.
//
// This file is the job (what to fetch, in which order, what to remember and delete); moving one
// message's bytes into submit (the streamed RETR, the header-only delivery) is pop3-retrieve.ts.

import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { TidemailError } from '../errors.js';
import { log } from '../log/log.js';
import type { FetchAccount } from './account.js';
import { readAccountPassword } from './account.js';
import { describeRead } from '../config/secret-file.js';
import { Pop3Client, Pop3Error, Pop3LimitError, Pop3TlsError } from './pop3-client.js';
import { envelopeFor, type FetchEnvelope } from './recipients.js';
import { deliverHeaders, retrieve, SubmitError, TOP_CAP } from './pop3-retrieve.js';
import type { UidlStore } from './uidl-store.js';

export interface FetchDeps {
  uidls: UidlStore;
  /**
   * Durably queue one fetched message (CRLF bytes, streamed); resolves only after fsync.
   * Must read `body` to its end; rejecting means "not taken now": the fetch stops and the
   * message stays on the server for the next run.
   */
  submit(account: FetchAccount, body: AsyncIterable<Buffer>, envelope: FetchEnvelope): Promise<void>;
  /** After each message, and every 64 KiB within one (`bytes` counts the partial message too). */
  onProgress?(p: FetchProgress): void;
  signal?: AbortSignal;
  /** Longest wait for any one server reply; the client's default otherwise. */
  timeoutMs?: number;
  /** Slowest transfer rate before a multi-line reply's deadline; the client's default otherwise. */
  minBytesPerSecond?: number;
  /** [smtp] max_message_size: no fetched message may be larger either. */
  maxMessageSize?: number;
  /**
   * Messages (by UIDL) that went over their limit at an earlier try. They are tried after all
   * others, and only with `retrySuspects`; otherwise left on the server and reported again.
   */
  suspects?: ReadonlyMap<string, OverLimit>;
  retrySuspects?: boolean;
}

/** A message whose RETR went over its limit (or was held back for having done so before). */
export interface OverLimit {
  msg: number;
  uidl?: string;
  /** Its size in LIST. */
  listed: number;
  limit: number;
  /** Which limit was the lowest. */
  by: 'LIST' | 'max_size' | 'max_message_size';
  /** Bytes read when the connection was cut. */
  read: number;
  /** Ms since the epoch of the try that went over. */
  at: number;
  /** Not tried this time: held back from an earlier try. */
  held?: boolean;
}

export interface FetchProgress {
  /** Messages finished (fetched or skipped) of `total` new ones. */
  done: number;
  total: number;
  bytes: number;
}

export interface FetchResult {
  fetched: number;
  deleted: number;
  /** Left on the server for being over max_size (with or without their headers delivered). */
  skipped: number;
  /** Of `skipped`: delivered as their header section (oversize = "headers"). */
  headersOnly?: number;
  /** Refused by a data-phase check (spam, virus): left on the server, logged. */
  refused?: number;
  bytes: number;
  error?: string;
  /** The server refused the credentials: retrying will not help until someone fixes them. */
  authFailed?: boolean;
  /** The server's certificate did not verify: likewise a configuration problem. */
  tlsFailed?: boolean;
  /** Messages that went over their size limit, this time or (held) before; left on the server. */
  overLimit?: OverLimit[];
}

/** What a RETR may read: LIST size + 10 % + 64 KiB, or max_size or max_message_size when lower. */
export function retrLimit(listed: number, o: { maxSize?: number; maxMessageSize?: number }): { limit: number; by: OverLimit['by'] } {
  let best: { limit: number; by: OverLimit['by'] } = { limit: Math.floor(listed * 1.1) + 64 * 1024, by: 'LIST' };
  if (o.maxSize !== undefined && o.maxSize < best.limit) best = { limit: o.maxSize, by: 'max_size' };
  if (o.maxMessageSize !== undefined && o.maxMessageSize < best.limit) best = { limit: o.maxMessageSize, by: 'max_message_size' };
  return best;
}

/** Room per message in a LIST or UIDL listing: RFC 1939 ids are at most 70 characters. */
const LISTING_BYTES_PER_MESSAGE = 128;

/**
 * Fetches the account's new messages into `deps.submit`.
 * @returns counts; `error` (with `authFailed` for a refused login, `tlsFailed` for a certificate
 *   that does not verify) instead of throwing.
 */
export async function fetchAccount(acct: FetchAccount, deps: FetchDeps): Promise<FetchResult> {
  const result: FetchResult = { fetched: 0, deleted: 0, skipped: 0, bytes: 0 };
  let client: Pop3Client | undefined;
  /** UIDLs DELE'd this session: they count once QUIT is answered. */
  const deleted: string[] = [];
  try {
    const { password, read: secretRead } = await readAccountPassword(acct);
    let todo: { n: number; id: string | null; size: number }[] = [];
    let done = 0;
    /** `inflight`: bytes of the message being retrieved so far. */
    const progress = (inflight = 0) => deps.onProgress?.({ done, total: todo.length, bytes: result.bytes + inflight });
    client = await Pop3Client.connect({
      host: acct.host,
      port: acct.port,
      tls: acct.tls,
      ca: acct.caFile ? await fs.readFile(acct.caFile) : undefined,
      timeoutMs: deps.timeoutMs,
      minBytesPerSecond: deps.minBytesPerSecond,
      signal: deps.signal,
    });
    try {
      await client.login(acct.user, password, acct.auth);
    } catch (err) {
      if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      // RFC 3206: [SYS/TEMP], [IN-USE] and [LOGIN-DELAY] are not about the credentials.
      const temporary = /\[(SYS\/TEMP|IN-USE|LOGIN-DELAY)\]/i.test(err.response);
      result.error = temporary
        ? `POP3 login to ${acct.host}:${acct.port} as ${acct.user} failed for now: ${err.response}`
        : `POP3 login to ${acct.host}:${acct.port} as ${acct.user} refused (wrong user name or password?): ${err.response}${secretRead ? ` (password from ${describeRead(secretRead)})` : ''}`;
      if (!temporary) result.authFailed = true;
      client.close();
      return result;
    }

    // STAT first: its count bounds the listings, so an endless LIST or UIDL is cut early.
    const count = await client.stat().then(
      (st) => st.count,
      (err: unknown) => {
        if (err instanceof Pop3Error && err.response !== undefined) return null; // STAT is mandatory, but be lenient
        throw err;
      },
    );
    const listingCap = count === null ? undefined : 64 * 1024 + count * LISTING_BYTES_PER_MESSAGE;
    const sizes = await client.list(listingCap);
    const listed = await listIds(client, acct, listingCap);
    const ids = listed?.ids ?? null;
    const mayKeep = ids !== null;
    if (!mayKeep && acct.keep) throw new Pop3Error(`${acct.host}:${acct.port} offers neither UIDL nor TOP, so new messages cannot be told apart; set keep = false for account "${acct.name}"`);
    if (ids) await deps.uidls.prune(acct.name, new Set(ids.values()));
    // keep = false: messages queued and DELE'd by an earlier session that never reached QUIT (a
    // cut link, a RETR over its limit) are still here under the same UIDL (RFC 1939 6: no QUIT,
    // no deletion). They are deleted now, or they would stay on the server for good. Only ids
    // UIDL lists once: of two messages under one id we could not tell which one we have.
    const pending = !acct.keep && listed?.byUidl ? await deps.uidls.delePending(acct.name) : new Set<string>();
    const listings = new Map<string, number>();
    for (const id of pending.size ? ids!.values() : []) listings.set(id, (listings.get(id) ?? 0) + 1);
    const stale: { n: number; id: string }[] = [];

    // What to fetch: every listed message not remembered, in server order; suspects last.
    todo = [];
    const later: typeof todo = [];
    for (const [n, size] of [...sizes].sort((a, b) => a[0] - b[0])) {
      const id = ids ? ids.get(n) : null;
      if (id === undefined) continue; // listed by LIST but not by UIDL: racing with another client
      if (id !== null && pending.has(id) && listings.get(id) === 1) {
        stale.push({ n, id });
        continue;
      }
      if (id !== null && (await deps.uidls.has(acct.name, id))) continue;
      const suspect = id !== null ? deps.suspects?.get(id) : undefined;
      if (suspect && !deps.retrySuspects) {
        (result.overLimit ??= []).push({ ...suspect, msg: n, held: true });
        continue;
      }
      (suspect ? later : todo).push({ n, id, size });
    }
    todo.push(...later);
    // The global limit counts for the oversize decision too: over it, RETR would only be cut.
    const maxSize = Math.min(acct.maxSize ?? Infinity, deps.maxMessageSize ?? Infinity);
    const maxName = acct.maxSize !== undefined && acct.maxSize <= maxSize ? 'max_size' : 'max_message_size';

    progress();
    for (const { n, id } of stale) {
      await client.dele(n);
      deleted.push(id);
      result.deleted++;
    }
    if (stale.length) log.info(null, 'fetch: deleting messages fetched by a session that ended before QUIT', { account: acct.name, count: stale.length });
    for (const m of todo) {
      if (m.size > maxSize) {
        // Without an id it could not be remembered, and would be handled again on every run.
        const headers = acct.oversize === 'headers' && m.id !== null;
        log.warn(null, `fetch: message larger than ${maxName} left on the server${headers ? ', its headers delivered' : ''}`, { account: acct.name, msg: m.n, size: m.size, max: maxSize });
        if (headers) {
          const bytes = await deliverHeaders(client, acct, m, maxSize, maxName, deps);
          result.bytes += bytes;
          result.headersOnly = (result.headersOnly ?? 0) + 1;
        }
        if (m.id !== null) await deps.uidls.add(acct.name, m.id, true);
        result.skipped++;
        done++;
        progress();
        continue;
      }
      let bytes: number;
      const cap = retrLimit(m.size, { maxSize: acct.maxSize, maxMessageSize: deps.maxMessageSize });
      try {
        bytes = await retrieve(client, m.n, cap.limit, acct.recipientsFrom.length > 0, (body, headerLines) => deps.submit(acct, body, envelopeFor(acct, headerLines)), progress);
      } catch (err) {
        if (err instanceof Pop3LimitError) {
          const o: OverLimit = { msg: m.n, ...(m.id !== null ? { uidl: m.id } : {}), listed: m.size, limit: cap.limit, by: cap.by, read: err.read, at: Date.now() };
          (result.overLimit ??= []).push(o);
          log.warn(null, 'fetch: message went over its size limit; connection cut, left on the server', { account: acct.name, msg: m.n, uidl: m.id ?? undefined, listed: m.size, limit: cap.limit, by: cap.by, read: err.read });
          throw new Pop3LimitError(`${describeOver(o)}; the connection was cut, nothing of it was queued, it is left on the server`, err.read, err.limit);
        }
        const refused = err instanceof SubmitError && err.cause instanceof MessageRefused ? err.cause : null;
        if (!refused) throw err;
        log.warn(null, 'fetch: message refused by a check, left on the server', { account: acct.name, msg: m.n, uidl: m.id ?? undefined, error: refused.message });
        if (refused.permanent && m.id !== null) await deps.uidls.add(acct.name, m.id, true);
        result.refused = (result.refused ?? 0) + 1;
        done++;
        progress();
        continue;
      }
      result.fetched++;
      result.bytes += bytes;
      if (m.id !== null) await deps.uidls.add(acct.name, m.id, false, !acct.keep);
      if (!acct.keep) {
        await client.dele(m.n);
        if (m.id !== null) deleted.push(m.id);
        result.deleted++;
      }
      done++;
      progress();
    }
    await client.quit();
    client = undefined;
    await deps.uidls.deleCommitted(acct.name, deleted);
    const held = result.overLimit?.filter((o) => o.held) ?? [];
    if (held.length) {
      result.error = held.map((o) => `${describeMessage(o)} left on the server: at an earlier try it ${describeOver(o, false)}`).join('; ') + `; not fetched automatically again — \`tidemail fetch ${acct.name}\` tries it once more`;
    }
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    if (err instanceof Pop3TlsError) {
      result.tlsFailed = true;
      if (!acct.caFile) result.error += `; for a private CA set tls_ca_file in the [[fetch]] entry of account "${acct.name}"`;
    }
    if (client && err instanceof SubmitError) {
      // The session is still in step: QUIT so the DELEs of the messages queued so far count.
      try {
        await client.quit();
        client = undefined;
        await deps.uidls.deleCommitted(acct.name, deleted);
      } catch {
        // a failed QUIT leaves every message on the server; they are skipped by UIDL next time
      }
    }
    if (result.deleted && client) result.deleted = 0; // no QUIT, no deletions (RFC 1939 6)
  } finally {
    client?.close();
  }
  return result;
}

/**
 * A data-phase check refused the message (thrown by submit): it stays on the server, never
 * deleted. `permanent` (reject): remembered, not offered to the checks again; otherwise
 * (tempfail) tried again at the next fetch.
 */
export class MessageRefused extends TidemailError {
  override name = 'MessageRefused';
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
  }
}

/**
 * Message number → id: UIDL (byUidl), else ids from TOP headers, else null (neither command).
 */
async function listIds(client: Pop3Client, acct: FetchAccount, listingCap: number | undefined): Promise<{ ids: Map<number, string>; byUidl: boolean } | null> {
  try {
    return { ids: await client.uidl(listingCap), byUidl: true };
  } catch (err) {
    if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
  }
  log.info(null, 'fetch: server has no UIDL, telling messages apart by their headers (TOP)', { account: acct.name });
  const out = new Map<number, string>();
  const seen = new Map<string, number>();
  for (const n of (await client.list(listingCap)).keys()) {
    let lines: Buffer[];
    try {
      lines = (await client.multiline(`TOP ${n} 0`, undefined, { maxBytes: TOP_CAP })).lines;
    } catch (err) {
      if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
      return null;
    }
    let id = headerId(lines);
    const count = (seen.get(id) ?? 0) + 1;
    seen.set(id, count);
    if (count > 1) id += `#${count}`;
    out.set(n, id);
  }
  return { ids: out, byUidl: false };
}

const describeMessage = (o: OverLimit) => `message ${o.msg}${o.uidl ? ` (UIDL ${o.uidl})` : ''}`;

/** "message 2 (UIDL u2) sent more than 65756 bytes (LIST said 200 bytes)". */
function describeOver(o: OverLimit, subject = true): string {
  const why = o.by === 'LIST' ? `LIST said ${o.listed} bytes` : `${o.by}; LIST said ${o.listed} bytes`;
  return `${subject ? `${describeMessage(o)} ` : ''}sent more than ${o.limit} bytes (${why})`;
}

const VOLATILE = /^(status|x-status|x-uid|x-keywords|content-length):/i;

function headerId(lines: Buffer[]): string {
  const text = lines.map((l) => l.toString('latin1'));
  // Unfold (RFC 5322 2.2.3) before looking for the Message-ID.
  const fields: string[] = [];
  for (const l of text) {
    if (l === '') break;
    if (/^[ \t]/.test(l) && fields.length) fields[fields.length - 1] += l;
    else fields.push(l);
  }
  const mid = fields.find((f) => /^message-id:/i.test(f));
  const h = createHash('sha256');
  if (mid) h.update(mid.slice(mid.indexOf(':') + 1).trim());
  else for (const f of fields) if (!VOLATILE.test(f)) h.update(f + '\n');
  return `top:${h.digest('hex')}`;
}
