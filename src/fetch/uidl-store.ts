// Which messages of which POP3 account were already fetched, so that keep = true fetches only
// new mail and an interrupted keep = false run does not fetch twice what it already queued.
//
// Format: <stateDir>/fetch.sqlite, WAL, synchronous=FULL (an add() is on disk when it resolves).
//   fetched(account TEXT, uidl TEXT, fetched_at INTEGER ms since epoch, skipped INTEGER 0|1,
//           PRIMARY KEY(account, uidl))
// `skipped` = 1: not fetched but deliberately left on the server (larger than max size).
// `dele_pending` = 1 (migration 2): fetched by keep = false and DELE sent, but the session's QUIT
// (which alone makes a DELE count, RFC 1939 6) not seen: the server still has it under this id.
// Migrations are numbered by PRAGMA user_version and never edited.

import fs from 'node:fs';
import path from 'node:path';
import { Db } from '../queue/db.js';
import { migrate } from '../queue/migrate.js';
import { stateError } from '../queue/state-error.js';

const MIGRATIONS = [
  `CREATE TABLE fetched (
     account TEXT NOT NULL,
     uidl TEXT NOT NULL,
     fetched_at INTEGER NOT NULL,
     skipped INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (account, uidl)
   ) WITHOUT ROWID;`,
  `ALTER TABLE fetched ADD COLUMN dele_pending INTEGER NOT NULL DEFAULT 0;`,
];

export class UidlStore {
  private readonly db: Db;

  private constructor(db: Db) {
    this.db = db;
  }

  /** Opens (creating when needed) `<stateDir>/fetch.sqlite`. */
  static async open(stateDir: string): Promise<UidlStore> {
    const file = path.join(stateDir, 'fetch.sqlite');
    let db: Db | undefined;
    try {
      fs.mkdirSync(stateDir, { recursive: true });
      db = await Db.open(file);
      await db.exec('PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;');
      // All pending migrations in one transaction; a file from a newer build is refused.
      await migrate(db, file, MIGRATIONS);
    } catch (err) {
      await db?.close().catch(() => undefined);
      throw stateError(err, file);
    }
    return new UidlStore(db);
  }

  /** True when the message was fetched (or deliberately skipped) before. */
  async has(account: string, uidl: string): Promise<boolean> {
    return (await this.db.get('SELECT 1 AS x FROM fetched WHERE account = ? AND uidl = ?', [account, uidl])) !== undefined;
  }

  /**
   * Remembers a message durably; `skipped` marks one left on the server on purpose, `delePending`
   * one about to be deleted there (until deleCommitted).
   */
  async add(account: string, uidl: string, skipped = false, delePending = false): Promise<void> {
    await this.db.run('INSERT OR REPLACE INTO fetched (account, uidl, fetched_at, skipped, dele_pending) VALUES (?, ?, ?, ?, ?)', [account, uidl, Date.now(), skipped ? 1 : 0, delePending ? 1 : 0]);
  }

  /** The account's messages whose DELE was sent but whose session never reached QUIT. */
  async delePending(account: string): Promise<Set<string>> {
    return new Set((await this.db.all<{ uidl: string }>('SELECT uidl FROM fetched WHERE account = ? AND dele_pending = 1', [account])).map((r) => r.uidl));
  }

  /** The server answered QUIT: these DELEs took effect. */
  async deleCommitted(account: string, uidls: readonly string[]): Promise<void> {
    if (!uidls.length) return;
    await this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const u of uidls) await this.db.run('UPDATE fetched SET dele_pending = 0 WHERE account = ? AND uidl = ?', [account, u]);
      await this.db.exec('COMMIT');
    } catch (err) {
      await this.db.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /** Forgets the account's UIDLs that are no longer on the server (`present`: the full list). */
  async prune(account: string, present: Set<string>): Promise<void> {
    const rows = await this.db.all<{ uidl: string }>('SELECT uidl FROM fetched WHERE account = ?', [account]);
    const gone = rows.map((r) => r.uidl).filter((u) => !present.has(u));
    if (!gone.length) return;
    await this.db.exec('BEGIN IMMEDIATE');
    try {
      for (const u of gone) await this.db.run('DELETE FROM fetched WHERE account = ? AND uidl = ?', [account, u]);
      await this.db.exec('COMMIT');
    } catch (err) {
      await this.db.exec('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  close(): Promise<void> {
    return this.db.close();
  }
}
