// The fetch job: log in to one POP3 account, hand every message not fetched before to the
// queue, remember it, and (keep = false) delete it on the server.
//
// Order per message, for "no loss, at most one duplicate" under kill -9 or a dropped link:
//   RETR (streamed into submit) → submit resolves (queued, fsync'd) → uidls.add (fsync'd)
//   → DELE (only takes effect at QUIT, RFC 1939 6).
// Dying before the add: the message is fetched again next time (the one in flight). Dying
// after it but before QUIT: the server keeps the message, we skip it by its UIDL.
//
// Servers without UIDL (RFC 1939 7 makes it optional): the id is made from `TOP n 0`
// headers — "top:" + sha256 of the Message-ID, or, without one, of the header block minus
// the lines servers rewrite (Status, X-Status, X-UID, X-Keywords, Content-Length); repeats
// within one listing get "#2", "#3"… When TOP is missing too, keep = false fetches and deletes
// everything (a connection lost before QUIT then duplicates that session's messages — the
// only way to read such a server at all), and keep = true is refused with an error.

import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { TidemailError } from '../errors.js';
import { log } from '../log/log.js';
import type { FetchAccount } from './account.js';
import { readAccountPassword } from './account.js';
import { Pop3Client, Pop3Error } from './pop3-client.js';
import type { UidlStore } from './uidl-store.js';

export interface FetchDeps {
  uidls: UidlStore;
  /**
   * Durably queue one fetched message (CRLF bytes, streamed); resolves only after fsync.
   * Must read `body` to its end; rejecting means "not taken now": the fetch stops and the
   * message stays on the server for the next run.
   */
  submit(account: FetchAccount, body: AsyncIterable<Buffer>): Promise<void>;
  onProgress?(p: { done: number; total: number; bytes: number }): void;
  signal?: AbortSignal;
  /** Longest wait for any one server reply; the client's default otherwise. */
  timeoutMs?: number;
}

export interface FetchResult {
  fetched: number;
  deleted: number;
  skipped: number;
  bytes: number;
  error?: string;
  authFailed?: boolean;
}

/** Bytes per chunk handed to submit, and chunks waiting before RETR stops reading. */
const CHUNK = 64 * 1024;
const MAX_QUEUED = 4;

/**
 * Fetches the account's new messages into `deps.submit`.
 * @returns counts; `error` (and `authFailed` for a refused login) instead of throwing.
 */
export async function fetchAccount(acct: FetchAccount, deps: FetchDeps): Promise<FetchResult> {
  const result: FetchResult = { fetched: 0, deleted: 0, skipped: 0, bytes: 0 };
  let client: Pop3Client | undefined;
  try {
    const password = await readAccountPassword(acct);
    client = await Pop3Client.connect({
      host: acct.host,
      port: acct.port,
      tls: acct.tls,
      ca: acct.caFile ? await fs.readFile(acct.caFile) : undefined,
      timeoutMs: deps.timeoutMs,
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
        : `POP3 login to ${acct.host}:${acct.port} as ${acct.user} refused (wrong user name or password?): ${err.response}`;
      if (!temporary) result.authFailed = true;
      client.close();
      return result;
    }

    const sizes = await client.list();
    const ids = await listIds(client, acct);
    const mayKeep = ids !== null;
    if (!mayKeep && acct.keep) throw new Pop3Error(`${acct.host}:${acct.port} offers neither UIDL nor TOP, so new messages cannot be told apart; set keep = false for account "${acct.name}"`);
    if (ids) await deps.uidls.prune(acct.name, new Set(ids.values()));

    // What to fetch: every listed message not remembered, in server order.
    const todo: { n: number; id: string | null; size: number }[] = [];
    for (const [n, size] of [...sizes].sort((a, b) => a[0] - b[0])) {
      const id = ids ? ids.get(n) : null;
      if (id === undefined) continue; // listed by LIST but not by UIDL: racing with another client
      if (id !== null && (await deps.uidls.has(acct.name, id))) continue;
      todo.push({ n, id, size });
    }

    let done = 0;
    for (const m of todo) {
      if (acct.maxSize !== undefined && m.size > acct.maxSize) {
        log.warn(null, 'fetch: message larger than max size left on the server', { account: acct.name, msg: m.n, size: m.size, max: acct.maxSize });
        if (m.id !== null) await deps.uidls.add(acct.name, m.id, true);
        result.skipped++;
        deps.onProgress?.({ done: ++done, total: todo.length, bytes: result.bytes });
        continue;
      }
      const bytes = await retrieve(client, m.n, (body) => deps.submit(acct, body));
      result.fetched++;
      result.bytes += bytes;
      if (m.id !== null) await deps.uidls.add(acct.name, m.id);
      if (!acct.keep) {
        await client.dele(m.n);
        result.deleted++;
      }
      deps.onProgress?.({ done: ++done, total: todo.length, bytes: result.bytes });
    }
    await client.quit();
    client = undefined;
  } catch (err) {
    result.error = err instanceof Error ? err.message : String(err);
    if (client && err instanceof SubmitError) {
      // The session is still in step: QUIT so the DELEs of the messages queued so far count.
      try {
        await client.quit();
        client = undefined;
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

/** submit rejected the message (the POP3 session itself is fine). */
class SubmitError extends TidemailError {
  override name = 'SubmitError';
}

/**
 * Message number → id: UIDL, else ids from TOP headers, else null (neither command).
 */
async function listIds(client: Pop3Client, acct: FetchAccount): Promise<Map<number, string> | null> {
  try {
    return await client.uidl();
  } catch (err) {
    if (!(err instanceof Pop3Error) || err.response === undefined) throw err;
  }
  log.info(null, 'fetch: server has no UIDL, telling messages apart by their headers (TOP)', { account: acct.name });
  const out = new Map<number, string>();
  const seen = new Map<string, number>();
  for (const n of (await client.list()).keys()) {
    let lines: Buffer[];
    try {
      lines = (await client.multiline(`TOP ${n} 0`)).lines;
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
  return out;
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

/**
 * RETR n, its lines (dot-unstuffed, CRLF-terminated) streamed into `submit` through a bounded
 * queue of chunks: reading from the server pauses while submit is behind.
 * @returns the message's size in bytes.
 * @throws SubmitError when submit rejects or stops reading early; Pop3Error from RETR.
 */
async function retrieve(client: Pop3Client, n: number, submit: (body: AsyncIterable<Buffer>) => Promise<void>): Promise<number> {
  const chunks: Buffer[] = [];
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let ended = false;
  let failure: Error | null = null;
  let consumerGone = false;
  let consumedToEnd = false;
  let wakeConsumer: (() => void) | null = null;
  let wakeProducer: (() => void) | null = null;
  let total = 0;
  const poke = () => {
    wakeConsumer?.();
    wakeConsumer = null;
  };
  const flush = () => {
    if (!pendingBytes) return;
    chunks.push(pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes));
    pending = [];
    pendingBytes = 0;
    poke();
  };

  const body: AsyncIterable<Buffer> = {
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          const c = chunks.shift();
          if (c) {
            wakeProducer?.();
            wakeProducer = null;
            yield c;
            continue;
          }
          if (failure) throw failure;
          if (ended) {
            consumedToEnd = true;
            return;
          }
          await new Promise<void>((r) => (wakeConsumer = r));
        }
      } finally {
        if (!consumedToEnd) stopConsuming();
      }
    },
  };
  const stopConsuming = () => {
    consumerGone = true;
    chunks.length = 0;
    wakeProducer?.();
    wakeProducer = null;
  };

  const onLine = async (line: Buffer) => {
    total += line.length + 2;
    if (consumerGone) return; // keep reading to stay in step with the server
    pending.push(line, CRLF);
    pendingBytes += line.length + 2;
    if (pendingBytes < CHUNK) return;
    flush();
    while (chunks.length >= MAX_QUEUED && !consumerGone) await new Promise<void>((r) => (wakeProducer = r));
  };

  const retr = client.retr(n, onLine).then(
    () => {
      flush();
      ended = true;
      poke();
    },
    (err: unknown) => {
      failure = err instanceof Error ? err : new Error(String(err));
      poke();
      throw err;
    },
  );
  const submitted = submit(body).finally(stopConsuming);
  const [r, s] = await Promise.allSettled([retr, submitted]);
  if (r.status === 'rejected') throw r.reason;
  if (s.status === 'rejected') throw new SubmitError(`message ${n} was not queued: ${s.reason instanceof Error ? s.reason.message : String(s.reason)}`, { cause: s.reason });
  if (!consumedToEnd) throw new SubmitError(`message ${n} was not queued: submit returned before reading the whole message`);
  return total;
}

const CRLF = Buffer.from('\r\n');
