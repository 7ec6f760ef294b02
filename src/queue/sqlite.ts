// The SQLite queue backend.
//
// Schema:
//   messages   one row per accepted message: envelope sender, arrival, size, source
//   recipients one row per recipient ("envelope"): status, attempts, next attempt, last error
//   chunks     the body, in ≤64 KiB pieces (seq 1..n), so bodies stream in and out
// A message becomes visible when its messages+recipients rows are inserted, in the same
// transaction as its last chunk; chunks without a message row are leftovers of a session that
// died mid-DATA and are removed at open. WAL mode: the delivery side reads bodies through its own
// connection while sessions write.

import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { Db, GroupCommitWriter, sqlLiteral } from './db.js';
import type { QueueAdmin } from './admin.js';
import { envelopeId, isEnvelopeId, messageIdOf, newMessageId, recipientIndexOf } from './ids.js';
import { damaged, isCorruption, preflightQueue, QUEUE_FILE, quickCheck, writeMarker } from './integrity.js';
import { addColumnIfMissing, migrate, type Migration } from './migrate.js';
import { stateError } from './state-error.js';
import type { Clock, Envelope, EnvelopeUpdate, MessageMeta, QueueStore, QueuedMessage, Spool } from './store.js';

export const CHUNK_SIZE = 64 * 1024;

// Numbered migrations (queue/migrate.ts), never edited once released: append one to change the
// schema. Before 0.1.0 the schema was edited in place (7cd1f98: no waiting; a83b466: + waiting;
// 0110878: + route, first_attempt; 226baa0: + events) and files carried no version, so
// migration 1 recognises every one of those shapes and brings it to the 0.1.0 schema.
const V1_TABLES = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY, sender TEXT NOT NULL, created INTEGER NOT NULL, size INTEGER NOT NULL,
  via TEXT NOT NULL, client TEXT, helo TEXT, origin TEXT UNIQUE);
CREATE TABLE IF NOT EXISTS recipients (
  env_id TEXT PRIMARY KEY, msgid TEXT NOT NULL, address TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt INTEGER NOT NULL, last_error TEXT, warned INTEGER NOT NULL DEFAULT 0,
  waiting TEXT, route TEXT, first_attempt INTEGER);
CREATE TABLE IF NOT EXISTS chunks (msgid TEXT NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (msgid, seq));
`;
const V1_REST = `
CREATE INDEX IF NOT EXISTS recipients_due ON recipients(status, next_attempt);
CREATE INDEX IF NOT EXISTS recipients_msg ON recipients(msgid);
-- Each message's history (queue/events.ts), kept after the message leaves the queue.
CREATE TABLE IF NOT EXISTS events (
  t INTEGER NOT NULL, msgid TEXT NOT NULL, env_id TEXT, level TEXT NOT NULL, event TEXT NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_msg ON events(msgid, t);
CREATE INDEX IF NOT EXISTS events_t ON events(t);
`;

export const QUEUE_MIGRATIONS: readonly Migration[] = [
  async (db) => {
    await db.exec(V1_TABLES);
    await addColumnIfMissing(db, 'recipients', 'waiting', 'TEXT');
    await addColumnIfMissing(db, 'recipients', 'route', 'TEXT');
    await addColumnIfMissing(db, 'recipients', 'first_attempt', 'INTEGER');
    await db.exec(V1_REST);
  },
];

const ENVELOPE_SELECT = `SELECT r.env_id AS envId, r.msgid, r.address AS recipient, r.status, r.attempts,
  r.next_attempt AS nextAttempt, r.last_error AS lastError, r.warned, r.first_attempt AS firstAttempt, m.sender, m.created, m.size, m.via
  FROM recipients r JOIN messages m ON m.id = r.msgid`;

interface EnvelopeRow extends Omit<Envelope, 'warned'> {
  warned: number;
}
const toEnvelope = (r: EnvelopeRow): Envelope => ({ ...r, warned: r.warned !== 0 });

/** Storage and its administration (admin.ts) in one file; every time comes from `clock`. */
export class SqliteQueueStore implements QueueStore, QueueAdmin {
  private constructor(
    private readonly writeDb: Db,
    private readonly readDb: Db,
    readonly writer: GroupCommitWriter,
    private readonly clock: Clock,
  ) {}

  static async open(stateDir: string, clock: Clock): Promise<SqliteQueueStore> {
    const file = path.join(stateDir, QUEUE_FILE);
    try {
      fs.mkdirSync(stateDir, { recursive: true, mode: 0o750 });
      preflightQueue(stateDir);
      const w = await Db.open(file);
      try {
        await w.exec('PRAGMA busy_timeout=10000;');
        // Before anything writes: a damaged file is refused as it is.
        await quickCheck(w, file);
        await w.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;');
        await migrate(w, file, QUEUE_MIGRATIONS);
        // Leftovers of sessions that died mid-DATA, and messages whose last recipient went away.
        await w.exec(`DELETE FROM chunks WHERE NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = chunks.msgid);
          DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msgid = messages.id);`);
        writeMarker(stateDir);
        const r = await Db.open(file);
        await r.exec('PRAGMA busy_timeout=10000;');
        return new SqliteQueueStore(w, r, new GroupCommitWriter(w), clock);
      } catch (err) {
        await w.close().catch(() => undefined);
        throw err;
      }
    } catch (err) {
      if (isCorruption(err)) throw damaged(file, (err as Error).message, err);
      throw stateError(err, stateDir);
    }
  }

  openMessage(): Spool {
    return new SqliteSpool(newMessageId(this.clock()), this.writer, this.writeDb, this.clock);
  }

  async due(now: number, limit: number): Promise<Envelope[]> {
    const rows = await this.readDb.all<EnvelopeRow>(
      `${ENVELOPE_SELECT} WHERE r.status = 'queued' AND r.next_attempt <= ? ORDER BY r.next_attempt, r.env_id LIMIT ?`,
      [now, limit],
    );
    return rows.map(toEnvelope);
  }

  async nextDue(): Promise<number | null> {
    const row = await this.readDb.get<{ t: number | null }>(`SELECT MIN(next_attempt) AS t FROM recipients WHERE status = 'queued'`);
    return row?.t ?? null;
  }

  updateEnvelopes(updates: readonly EnvelopeUpdate[]): Promise<void> {
    return this.writer.submit(true, async (db) => {
      for (const u of updates) {
        await db.run(
          `UPDATE recipients SET attempts = ?, next_attempt = ?, last_error = ?, warned = COALESCE(?, warned), waiting = ?,
             route = COALESCE(?, route), first_attempt = CASE WHEN ? IS NULL THEN first_attempt ELSE COALESCE(first_attempt, ?) END
           WHERE env_id = ?`,
          [
            u.attempts, u.nextAttempt, u.lastError, u.warned === undefined ? null : u.warned ? 1 : 0, u.waiting ?? null,
            u.route ?? null, u.route ?? null, this.clock(), u.envId,
          ],
        );
      }
    });
  }

  deleteEnvelopes(envIds: readonly string[]): Promise<void> {
    if (!envIds.length) return Promise.resolve();
    return this.writer.submit(true, async (db) => {
      const msgids = new Set<string>();
      for (const id of envIds) {
        await db.run('DELETE FROM recipients WHERE env_id = ?', [id]);
        msgids.add(messageIdOf(id));
      }
      for (const m of msgids) await deleteIfEmpty(db, m);
    });
  }

  readBody(msgid: string): Readable {
    return readChunks(this.readDb, msgid);
  }

  async listMessages(): Promise<QueuedMessage[]> {
    const rows = (await this.readDb.all<EnvelopeRow>(`${ENVELOPE_SELECT} ORDER BY m.created, r.env_id`)).map(toEnvelope);
    return groupByMessage(rows);
  }

  async getMessage(id: string): Promise<QueuedMessage | undefined> {
    const rows = (await this.readDb.all<EnvelopeRow>(`${ENVELOPE_SELECT} WHERE r.msgid = ? ORDER BY r.env_id`, [messageIdOf(id)])).map(toEnvelope);
    return groupByMessage(rows)[0];
  }

  hold(id: string | null): Promise<number> {
    const [where, params] = idFilter(id);
    return this.writer.submit(true, (db) => db.run(`UPDATE recipients SET status = 'hold' WHERE ${where}`, params));
  }

  requeue(id: string | null): Promise<number> {
    const [where, params] = idFilter(id);
    const extra = id === null ? ` AND status = 'queued'` : '';
    return this.writer.submit(true, (db) =>
      db.run(`UPDATE recipients SET next_attempt = ?, status = 'queued' WHERE ${where}${extra}`, [this.clock(), ...params]),
    );
  }

  addRecipients(msgid: string, addresses: readonly string[]): Promise<void> {
    return this.writer.submit(true, async (db) => {
      const row = await db.get<{ last: string | null }>('SELECT MAX(env_id) AS last FROM recipients WHERE msgid = ?', [msgid]);
      let next = row?.last ? recipientIndexOf(row.last) + 1 : 0;
      const now = this.clock();
      for (const a of addresses) await db.run('INSERT INTO recipients (env_id, msgid, address, next_attempt) VALUES (?, ?, ?, ?)', [envelopeId(msgid, next++), msgid, a, now]);
    });
  }

  async countByRoute(): Promise<Record<string, number>> {
    const rows = await this.readDb.all<{ r: string | null; n: number }>(
      `SELECT COALESCE(waiting, route, '*') AS r, COUNT(*) AS n FROM recipients WHERE status = 'queued' GROUP BY r`,
    );
    return Object.fromEntries(rows.map((x) => [x.r ?? '*', x.n]));
  }

  flushRoute(route: string): Promise<number> {
    return this.writer.submit(true, (db) =>
      db.run(`UPDATE recipients SET next_attempt = ?, waiting = NULL WHERE status = 'queued' AND (waiting IN (?, '*') OR route = ?)`, [this.clock(), route, route]),
    );
  }

  releaseWaiting(route: string | null): Promise<number> {
    const [where, params] = route === null ? ['waiting IS NOT NULL', []] : ['waiting IN (?, \'*\')', [route]];
    return this.writer.submit(true, (db) =>
      db.run(`UPDATE recipients SET next_attempt = ?, waiting = NULL WHERE status = 'queued' AND ${where}`, [this.clock(), ...params]),
    );
  }

  removeMessage(msgid: string): Promise<boolean> {
    const id = messageIdOf(msgid);
    return this.writer.submit(true, async (db) => {
      const n = await db.run('DELETE FROM recipients WHERE msgid = ?', [id]);
      await deleteIfEmpty(db, id);
      return n > 0;
    });
  }

  async hasOrigin(origin: string): Promise<boolean> {
    return !!(await this.readDb.get('SELECT 1 FROM messages WHERE origin = ?', [origin]));
  }

  async close(): Promise<void> {
    await this.writer.idle();
    await this.readDb.close();
    await this.writeDb.exec('PRAGMA wal_checkpoint(TRUNCATE)').catch(() => undefined);
    await this.writeDb.close();
  }
}

const CHUNK_INSERT = 'INSERT INTO chunks (msgid, seq, data) VALUES (?, ?, ?)';

function chunkSql(msgid: string, seq: number, data: Buffer): string {
  return `INSERT INTO chunks (msgid, seq, data) VALUES (${sqlLiteral(msgid)}, ${seq}, ${sqlLiteral(data)});\n`;
}

function idFilter(id: string | null): [string, unknown[]] {
  if (id === null) return ['1 = 1', []];
  return isEnvelopeId(id) ? ['env_id = ?', [id.toUpperCase()]] : ['msgid = ?', [id.toUpperCase()]];
}

async function deleteIfEmpty(db: Db, msgid: string): Promise<void> {
  const left = await db.get('SELECT 1 FROM recipients WHERE msgid = ? LIMIT 1', [msgid]);
  if (left) return;
  await db.run('DELETE FROM chunks WHERE msgid = ?', [msgid]);
  await db.run('DELETE FROM messages WHERE id = ?', [msgid]);
}

function groupByMessage(rows: Envelope[]): QueuedMessage[] {
  const out = new Map<string, QueuedMessage>();
  for (const r of rows) {
    let m = out.get(r.msgid);
    if (!m) out.set(r.msgid, (m = { msgid: r.msgid, sender: r.sender, created: r.created, size: r.size, via: r.via, recipients: [] }));
    m.recipients.push(r);
  }
  return [...out.values()];
}

/**
 * A message's chunks in order. Chunk 0 holds headers prepended by checks; the body is 1..n.
 * Every stored message has at least one chunk (our trace header): none means the message is
 * gone, and an empty delivery must never happen.
 */
function readChunks(db: Db, msgid: string): Readable {
  let after = -1;
  let first = true;
  return new Readable({
    highWaterMark: CHUNK_SIZE,
    read() {
      db.get<{ seq: number; data: Buffer }>('SELECT seq, data FROM chunks WHERE msgid = ? AND seq > ? ORDER BY seq LIMIT 1', [msgid, after]).then(
        (row) => {
          if (row) {
            after = row.seq;
            first = false;
            this.push(row.data);
          } else if (first) this.destroy(new Error(`message ${msgid} has no body in the queue`));
          else this.push(null);
        },
        (err) => this.destroy(err as Error),
      );
    },
  });
}

class SqliteSpool implements Spool {
  private parts: Buffer[] = [];
  private partsLength = 0;
  private seq = 0;
  private written = 0;
  private failed: unknown = null;

  private prepended = false;
  /** A flush started by readBack(); commit waits for it. */
  private flushing: Promise<void> | null = null;

  constructor(
    readonly msgid: string,
    private readonly writer: GroupCommitWriter,
    // The writing connection: it always sees its own commits, while the read connection may still
    // hold the snapshot of a statement that has not been finalized yet (a stale, chunk-less view).
    private readonly ownDb: Db,
    private readonly clock: Clock,
  ) {}

  /** Writes what is buffered as a chunk (not durable: the commit's fsync covers it). */
  private async flush(): Promise<void> {
    if (!this.partsLength) return;
    const data = Buffer.concat(this.parts, this.partsLength);
    this.parts = [];
    this.partsLength = 0;
    const seq = ++this.seq;
    try {
      await this.writer.submitSql(false, chunkSql(this.msgid, seq, data));
    } catch (err) {
      this.failed = err;
      throw err;
    }
  }

  /**
   * A stream factory over what was written so far. The buffered tail is flushed only when a
   * check actually reads the body: checks that look at headers alone cost no extra write.
   */
  readBack(): () => Readable {
    return () => {
      const flushed = (this.flushing ??= this.flush());
      let inner: Readable | null = null;
      const out = new PassThrough();
      flushed.then(
        () => {
          inner = readChunks(this.ownDb, this.msgid);
          inner.on('error', (err) => out.destroy(err));
          inner.pipe(out);
        },
        (err: Error) => out.destroy(err),
      );
      out.on('close', () => inner?.destroy());
      return out;
    };
  }

  async rewrite(headerEnd: number, edit: { header?: (section: string) => string; body?: readonly Buffer[] }): Promise<void> {
    await (this.flushing ??= this.flush());
    // The chunks holding the field lines (usually the first one), read over our own connection.
    const rows: { seq: number; data: Buffer }[] = [];
    let length = 0;
    for (let after = 0; length < headerEnd; ) {
      const row = await this.ownDb.get<{ seq: number; data: Buffer }>('SELECT seq, data FROM chunks WHERE msgid = ? AND seq > ? ORDER BY seq LIMIT 1', [this.msgid, after]);
      if (!row) break;
      rows.push(row);
      length += row.data.length;
      after = row.seq;
    }
    const all = Buffer.concat(rows.map((r) => r.data));
    const head = all.subarray(0, headerEnd);
    const newHead = edit.header ? Buffer.from(edit.header(head.toString('latin1')), 'latin1') : head;
    const rest = edit.body ? Buffer.concat([Buffer.from('\r\n'), ...edit.body]) : all.subarray(headerEnd);
    const last = rows.at(-1)?.seq ?? 0;
    // One chunk replaces the rewritten ones (chunks may be any size; readers go by seq order).
    const data = Buffer.concat([newHead, rest]);
    const lid = sqlLiteral(this.msgid);
    const sql = `DELETE FROM chunks WHERE msgid = ${lid} AND seq >= 1${edit.body ? '' : ` AND seq <= ${last}`};\n` + chunkSql(this.msgid, 1, data);
    const before = edit.body ? this.written : all.length;
    await this.writer.submitSql(false, sql);
    this.written += data.length - before;
  }

  async prepend(header: Buffer): Promise<void> {
    if (this.prepended) throw new Error('prepend() may be called once per message');
    this.prepended = true;
    this.written += header.length;
    await this.writer.submitSql(false, chunkSql(this.msgid, 0, header));
  }

  get size(): number {
    return this.written;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.failed) throw this.failed;
    this.parts.push(chunk);
    this.partsLength += chunk.length;
    this.written += chunk.length;
    while (this.partsLength >= CHUNK_SIZE) {
      const all = Buffer.concat(this.parts, this.partsLength);
      const piece = all.subarray(0, CHUNK_SIZE);
      const rest = all.subarray(CHUNK_SIZE);
      this.parts = rest.length ? [Buffer.from(rest)] : [];
      this.partsLength = rest.length;
      const seq = ++this.seq;
      try {
        // Bound, not as X'…' text: a 64 KiB piece would be 128 KiB of hex, copied again for
        // SQLite, for every session writing a large message at once (50 sessions draining
        // after a stall peaked 35 MB higher that way; test/e2e/backpressure). Small messages
        // never get here: their one chunk goes as text inside the commit.
        await this.writer.submit(false, (db) => db.run(CHUNK_INSERT, [this.msgid, seq, piece]));
      } catch (err) {
        this.failed = err;
        throw err;
      }
    }
  }

  async commit(meta: MessageMeta): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.failed) throw this.failed;
    const last = this.partsLength ? Buffer.concat(this.parts, this.partsLength) : null;
    this.parts = [];
    this.partsLength = 0;
    const seq = last ? ++this.seq : 0;
    const now = this.clock();
    const due = meta.notBefore ?? now;
    let sql = last ? chunkSql(this.msgid, seq, last) : '';
    sql += `INSERT INTO messages (id, sender, created, size, via, client, helo, origin) VALUES (${[
      this.msgid, meta.sender, now, this.written, meta.via, meta.client ?? null, meta.helo ?? null, meta.origin ?? null,
    ].map(sqlLiteral).join(', ')});\n`;
    meta.recipients.forEach((rcpt, i) => {
      const w = meta.waitingAt?.(rcpt) ?? null;
      sql += w
        ? `INSERT INTO recipients (env_id, msgid, address, next_attempt, last_error, waiting) VALUES (${[envelopeId(this.msgid, i), this.msgid, rcpt, w.nextAttempt, w.lastError, w.waiting].map(sqlLiteral).join(', ')});\n`
        : `INSERT INTO recipients (env_id, msgid, address, next_attempt) VALUES (${[envelopeId(this.msgid, i), this.msgid, rcpt, due].map(sqlLiteral).join(', ')});\n`;
    });
    return this.writer.submitSql(true, sql);
  }

  async rollback(): Promise<void> {
    await this.flushing?.catch(() => undefined);
    this.parts = [];
    this.partsLength = 0;
    if (this.seq === 0 && !this.prepended) return;
    await this.writer.submit(false, (db) => db.run('DELETE FROM chunks WHERE msgid = ?', [this.msgid])).catch(() => undefined);
  }
}
