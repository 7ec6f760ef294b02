// A small promise wrapper over the sqlite3 package, plus the group-commit writer.
//
// Group commit: every write is an operation submitted to one writer. While one transaction is
// committing (the fsync), new operations pile up; the next transaction takes them all. So one
// fsync covers many messages when sessions are concurrent, and a lone session pays no extra
// latency (there is no artificial wait window). Operations that must be durable before we
// answer (message commits) run with synchronous=FULL; body chunks of messages still being
// received run with NORMAL: they are only needed once the FULL commit that makes their message
// visible has synced the WAL, which covers every frame written before it.

import sqlite3 from 'sqlite3';

export type Params = unknown[];

export class Db {
  private constructor(private readonly db: sqlite3.Database) {}

  static open(file: string, readonly = false): Promise<Db> {
    const mode = readonly ? sqlite3.OPEN_READONLY : sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE;
    return new Promise((resolve, reject) => {
      const db = new sqlite3.Database(file, mode, (err) => (err ? reject(err) : resolve(new Db(db))));
    });
  }

  exec(sql: string): Promise<void> {
    return new Promise((resolve, reject) => this.db.exec(sql, (err) => (err ? reject(err) : resolve())));
  }

  run(sql: string, params: Params = []): Promise<number> {
    return new Promise((resolve, reject) =>
      this.db.run(sql, params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve(this.changes);
      }),
    );
  }

  get<T>(sql: string, params: Params = []): Promise<T | undefined> {
    return new Promise((resolve, reject) => this.db.get(sql, params, (err, row) => (err ? reject(err) : resolve(row as T | undefined))));
  }

  all<T>(sql: string, params: Params = []): Promise<T[]> {
    return new Promise((resolve, reject) => this.db.all(sql, params, (err, rows) => (err ? reject(err) : resolve(rows as T[]))));
  }

  /** A prepared statement, for the per-message hot path. */
  prepare(sql: string): Statement {
    return new Statement(this.db.prepare(sql));
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => this.db.close((err) => (err ? reject(err) : resolve())));
  }
}

export class Statement {
  constructor(private readonly stmt: sqlite3.Statement) {}
  run(params: Params): Promise<number> {
    return new Promise((resolve, reject) =>
      this.stmt.run(params, function (this: sqlite3.RunResult, err: Error | null) {
        if (err) reject(err);
        else resolve(this.changes);
      }),
    );
  }
  get<T>(params: Params): Promise<T | undefined> {
    return new Promise((resolve, reject) => this.stmt.get(params, (err, row) => (err ? reject(err) : resolve(row as T | undefined))));
  }
  finalize(): Promise<void> {
    return new Promise((resolve) => this.stmt.finalize(() => resolve()));
  }
}

/** An SQL literal: strings quoted, buffers as X'hex', null as NULL. */
export function sqlLiteral(v: string | number | Buffer | null): string {
  if (v === null) return 'NULL';
  if (typeof v === 'number') return String(v);
  if (Buffer.isBuffer(v)) return `X'${v.toString('hex')}'`;
  return `'${v.replaceAll("'", "''")}'`;
}

interface Op {
  durable: boolean;
  /** Either code to run inside the transaction… */
  run?: (db: Db) => Promise<unknown>;
  /** …or plain SQL text: a batch made only of these is one round trip to SQLite's thread. */
  sql?: string;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

const MAX_BATCH = 256;

export class GroupCommitWriter {
  private pending: Op[] = [];
  private draining = false;
  private sync: 'FULL' | 'NORMAL' | null = null;
  /** Number of transactions committed, for the benchmark and tests. */
  commits = 0;

  constructor(private readonly db: Db) {}

  submit<T>(durable: boolean, run: (db: Db) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ durable, run, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) void this.drain();
    });
  }

  /**
   * The hot path (message bodies and commits): statements as text, so a whole group commit —
   * BEGIN, every session's inserts, COMMIT — is a single exec instead of one thread-pool round
   * trip per statement.
   */
  submitSql(durable: boolean, sql: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ durable, sql, resolve: resolve as (v: unknown) => void, reject });
      if (!this.draining) void this.drain();
    });
  }

  /** Resolves once everything submitted so far is settled. */
  async idle(): Promise<void> {
    while (this.draining || this.pending.length) await new Promise((r) => setTimeout(r, 5));
  }

  private async setSync(mode: 'FULL' | 'NORMAL'): Promise<void> {
    if (this.sync === mode) return;
    await this.db.exec(`PRAGMA synchronous=${mode}`);
    this.sync = mode;
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.pending.length) {
        const batch = this.pending.splice(0, MAX_BATCH);
        try {
          const results = await this.runBatch(batch);
          batch.forEach((op, i) => op.resolve(results[i]));
        } catch {
          // One operation (or the commit itself, e.g. a full disk) failed: redo them one by
          // one so only the operations that really fail are refused.
          for (const op of batch) {
            try {
              op.resolve((await this.runBatch([op]))[0]);
            } catch (err) {
              op.reject(err);
            }
          }
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async runBatch(batch: Op[]): Promise<unknown[]> {
    await this.setSync(batch.some((o) => o.durable) ? 'FULL' : 'NORMAL');
    if (batch.every((o) => o.sql !== undefined)) {
      try {
        await this.db.exec(`BEGIN IMMEDIATE;\n${batch.map((o) => o.sql).join('\n')}\nCOMMIT;`);
      } catch (err) {
        await this.db.exec('ROLLBACK').catch(() => undefined);
        throw err;
      }
      this.commits++;
      return batch.map(() => undefined);
    }
    await this.db.exec('BEGIN IMMEDIATE');
    try {
      const results: unknown[] = [];
      for (let i = 0; i < batch.length; ) {
        if (batch[i]!.sql === undefined) {
          results.push(await batch[i++]!.run!(this.db));
          continue;
        }
        // Consecutive SQL-text operations still go as one exec: a large message's bound chunk
        // insert in the batch must not cost every commit beside it a round trip of its own.
        let end = i;
        while (end < batch.length && batch[end]!.sql !== undefined) end++;
        await this.db.exec(batch.slice(i, end).map((o) => o.sql).join('\n'));
        for (; i < end; i++) results.push(undefined);
      }
      await this.db.exec('COMMIT');
      this.commits++;
      return results;
    } catch (err) {
      await this.db.exec('ROLLBACK').catch(() => undefined); // SQLite may have rolled back already
      throw err;
    }
  }
}
