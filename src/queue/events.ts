// A message's history in the queue database: every log line that names a queue id (accepted,
// deferred with the next hop's reply, delivered, bounced, …) is also kept in the `events` table,
// so `tidemail log ID|ADDRESS` answers "where did my mail go" after the logs have rotated and
// after the message has left the queue.
//
// The table is created with the rest of the queue schema (queue/sqlite.ts).
//
// Cost: events are buffered for up to 250 ms (or 256 events) and then written as one plain-SQL
// batch through the group-commit writer with durable=false: they ride along with the next message
// commit, or, when the queue is idle, take a synchronous=NORMAL transaction (a WAL append, no
// fsync). A crash may lose the last quarter second of history; it never loses mail, and never
// makes a message wait for its log line.

import path from 'node:path';
import { setEventSink, type LogEvent } from '../log/log.js';
import { Db, sqlLiteral, type GroupCommitWriter } from './db.js';
import { isEnvelopeId, isMessageId, messageIdOf } from './ids.js';
import { namesAddress, senderView, submitterUid, type QueuedRecipientRow } from './sender-view.js';

/** History older than this is pruned (at start, then daily). */
export const EVENT_RETENTION_MS = 30 * 86_400_000;
const PRUNE_EVERY_MS = 86_400_000;

export interface StoredEvent {
  /** ms since the epoch */
  t: number;
  msgid: string;
  /** The recipient's 20-digit envelope id when the event is about one recipient. */
  envId: string | null;
  level: string;
  event: string;
  fields: string;
}

function insertSql(events: readonly LogEvent[]): string {
  const rows = events.map((e) => {
    const id = e.id.toUpperCase();
    return `(${[e.time, messageIdOf(id), isEnvelopeId(id) ? id : null, e.level, e.event, e.fields].map(sqlLiteral).join(', ')})`;
  });
  return `INSERT INTO events (t, msgid, env_id, level, event, fields) VALUES ${rows.join(',\n')};\n`;
}

function pruneSql(now: number): string {
  return `DELETE FROM events WHERE t < ${now - EVENT_RETENTION_MS};\n`;
}

/** Events wait in memory at most this long, so a quiet queue pays one small transaction per
 * interval, not one per log line; a busy one fills a batch first. */
const FLUSH_AFTER_MS = 250;
const FLUSH_AT_EVENTS = 256;

/**
 * Starts keeping every logged event with a queue id in the queue database behind `writer`.
 * Returns a stop function (the daemon need not call it: closing the store drains the buffer).
 */
export function recordEvents(writer: GroupCommitWriter): () => void {
  let pending: LogEvent[] = [];
  let timer: NodeJS.Timeout | null = null;
  const flush = () => {
    if (timer) clearTimeout(timer);
    timer = null;
    const batch = pending;
    pending = [];
    if (batch.length) writer.submitSql(false, insertSql(batch)).catch(() => undefined);
  };
  setEventSink((e) => {
    if (!isMessageId(messageIdOf(e.id))) return; // not a queue id (e.g. a session tag)
    pending.push(e);
    if (pending.length >= FLUSH_AT_EVENTS) flush();
    else if (!timer) {
      timer = setTimeout(flush, FLUSH_AFTER_MS);
      timer.unref();
    }
  });
  // The store's close() waits for writer.idle(): hand it what is still buffered first, so a
  // clean shutdown keeps the last events without the daemon having to know about us.
  const idle = writer.idle.bind(writer);
  writer.idle = () => {
    flush();
    return idle();
  };
  const prune = () => void writer.submitSql(false, pruneSql(Date.now())).catch(() => undefined);
  prune();
  const pruneTimer = setInterval(prune, PRUNE_EVERY_MS);
  pruneTimer.unref();
  return () => {
    setEventSink(null);
    clearInterval(pruneTimer);
    flush();
    writer.idle = idle;
  };
}

/**
 * An admin action taken without the daemon (mailrm, hold, … on the database directly) into the
 * message's history, as the daemon's log line would have put it there. Durable: it is the only
 * record of who did it.
 */
export async function recordAdminAction(writer: GroupCommitWriter, e: Omit<LogEvent, 'time' | 'level'>): Promise<void> {
  await writer.submitSql(true, insertSql([{ ...e, time: Date.now(), level: 'info' }]));
}

export interface EventQuery {
  /** A message or envelope id (the whole message's history either way). */
  id?: string;
  /** Messages with an event naming this address (from=<…>, to=<…>), case-insensitive; a bare
   * local part matches it at any domain. */
  address?: string;
  /** Only events at or after this time. */
  since?: number;
  limit?: number;
  /**
   * Only the messages this uid submitted (the `uid=N` field of their `accepted` event), as
   * their sender may see them (queue/sender-view.ts). Filtered in the query, so `limit`
   * counts this user's events, not everyone's.
   */
  uid?: number;
}

/** A message's history: its events, and the message row while it is still queued. */
export interface MessageHistory {
  msgid: string;
  events: StoredEvent[];
  queued: { sender: string; created: number; recipients: { envId: string; address: string; status: string; attempts: number; lastError: string | null; nextAttempt: number }[] } | null;
}

/**
 * Reads histories straight from the database file (the daemon may be down). Opens it
 * read-only, so looking never changes anything.
 */
export async function readHistories(stateDir: string, q: EventQuery): Promise<MessageHistory[]> {
  const db = await openQueueDbReadOnly(stateDir);
  try {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.id) {
      const id = messageIdOf(q.id);
      // A bounce or delay notice is its own message; it names the original with for=ID.
      where.push(`(msgid = ? OR fields LIKE ?)`);
      params.push(id, `%for=${id}%`);
    }
    if (q.address) {
      where.push(`msgid IN (SELECT msgid FROM events WHERE fields LIKE ? ESCAPE '\\')`);
      // A bare local part ("root") finds root@ any of our domains.
      const esc = q.address.replace(/[\\%_]/g, (c) => '\\' + c);
      params.push(q.address.includes('@') ? `%<${esc}>%` : `%<${esc}@%`);
    }
    if (q.since !== undefined) {
      where.push('t >= ?');
      params.push(q.since);
    }
    if (q.uid !== undefined) {
      if (!Number.isSafeInteger(q.uid) || q.uid < 0) throw new Error(`not a uid: ${q.uid}`);
      // A whole field: uid=1 is not uid=10. Text inside a quoted value (a sender address that
      // says " uid=1 ") passes here and is dropped below by submitterUid, which parses fields.
      where.push(`msgid IN (SELECT msgid FROM events WHERE event = 'accepted' AND ' ' || fields || ' ' LIKE ?)`);
      params.push(`% uid=${q.uid} %`);
    }
    const rows = await db.all<{ t: number; msgid: string; env_id: string | null; level: string; event: string; fields: string }>(
      `SELECT t, msgid, env_id, level, event, fields FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY t, rowid LIMIT ?`,
      [...params, q.limit ?? 10_000],
    );
    const byMsg = new Map<string, MessageHistory>();
    for (const r of rows) {
      let h = byMsg.get(r.msgid);
      if (!h) byMsg.set(r.msgid, (h = { msgid: r.msgid, events: [], queued: null }));
      h.events.push({ t: r.t, msgid: r.msgid, envId: r.env_id, level: r.level, event: r.event, fields: r.fields });
    }
    const out: MessageHistory[] = [];
    for (const h of byMsg.values()) {
      const m = await db.get<{ sender: string; created: number }>('SELECT sender, created FROM messages WHERE id = ?', [h.msgid]);
      const rcpts = m
        ? await db.all<QueuedRecipientRow>(
            `SELECT env_id AS envId, address, status, attempts, last_error AS lastError, next_attempt AS nextAttempt, route FROM recipients WHERE msgid = ? ORDER BY env_id`,
            [h.msgid],
          )
        : null;
      if (m && rcpts) h.queued = { ...m, recipients: rcpts.map(({ route: _route, ...r }) => r) };
      if (q.uid === undefined) {
        out.push(h);
        continue;
      }
      // The accepted event itself may be older than `since`: read it on its own.
      const accepted = await db.all<{ fields: string }>(`SELECT fields FROM events WHERE msgid = ? AND event = 'accepted'`, [h.msgid]);
      const own = accepted.find((a) => submitterUid(a.fields) === q.uid);
      if (!own) continue;
      const view = senderView(h, own.fields, rcpts);
      // The query above matched any event; the sender must find the address in what they see
      // (not in a forward target only the recipient's end names).
      if (q.address && !namesAddress(view, q.address)) continue;
      out.push(view);
    }
    return out;
  } finally {
    await db.close();
  }
}

/** Deferrals, bounces, warnings and errors since `since`, newest first (for `tidemail status`). */
export async function recentProblems(db: Db, since: number, limit = 5): Promise<StoredEvent[]> {
  const rows = await db.all<{ t: number; msgid: string; env_id: string | null; level: string; event: string; fields: string }>(
    `SELECT t, msgid, env_id, level, event, fields FROM events
     WHERE t >= ? AND (level IN ('warn', 'error') OR event LIKE 'deferred%' OR event LIKE 'bounced%' OR event LIKE 'refused%')
       -- a message an admin removed (mailrm) is no longer anyone's problem
       AND msgid NOT IN (SELECT msgid FROM events WHERE t >= ? AND event = 'removed by admin')
     ORDER BY t DESC, rowid DESC LIMIT ?`,
    [since, since, limit],
  );
  return rows.map((r) => ({ t: r.t, msgid: r.msgid, envId: r.env_id, level: r.level, event: r.event, fields: r.fields }));
}

/** When each POP3 account last brought a message in (its `accepted … account=NAME` events). */
export async function lastFetched(db: Db): Promise<Map<string, number>> {
  const rows = await db.all<{ fields: string; t: number }>(
    `SELECT fields, t FROM events WHERE event = 'accepted' AND fields LIKE '%via=fetch%' ORDER BY t DESC LIMIT 5000`,
  );
  const out = new Map<string, number>();
  for (const r of rows) {
    const name = /(?:^| )account=("(?:[^"\\]|\\.)*"|\S+)/.exec(r.fields)?.[1];
    const account = name?.startsWith('"') ? (JSON.parse(name) as string) : name;
    if (account && !out.has(account)) out.set(account, r.t);
  }
  return out;
}

/** Opens the queue database read-only (for commands that must work with the daemon down). */
export async function openQueueDbReadOnly(stateDir: string): Promise<Db> {
  const db = await Db.open(path.join(stateDir, 'queue.sqlite'), true);
  await db.exec('PRAGMA busy_timeout=10000;');
  return db;
}
