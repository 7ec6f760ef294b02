// Numbered schema migrations for our SQLite files, by PRAGMA user_version.
// Migration i (1-based) takes a file from version i-1 to i. All pending ones run in one
// transaction at open: a crash or a full disk midway leaves the file as it was. A file from a
// newer build (a downgrade) is refused, never "repaired": the old code would misread it.
// Migrations are never edited once released; a schema change is a new one appended.

import type { Db } from './db.js';
import { STATE_EXIT, StateError } from './state-error.js';

export type Migration = string | ((db: Db) => Promise<void>);

export async function migrate(db: Db, file: string, migrations: readonly Migration[]): Promise<void> {
  await db.exec('BEGIN IMMEDIATE');
  try {
    const v = (await db.get<{ user_version: number }>('PRAGMA user_version'))?.user_version ?? 0;
    if (v > migrations.length) {
      throw new StateError(
        `${file} was written by a newer tidemail (schema version ${v}; this build knows up to ${migrations.length}); ` +
          'run the newer tidemail again (the file is kept as it is), or move the file aside to start this one without it',
        STATE_EXIT.CONFIG,
      );
    }
    for (let i = v; i < migrations.length; i++) {
      const m = migrations[i]!;
      if (typeof m === 'string') await db.exec(m);
      else await m(db);
    }
    if (v < migrations.length) await db.exec(`PRAGMA user_version=${migrations.length}`);
    await db.exec('COMMIT');
  } catch (err) {
    await db.exec('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** Adds a column unless the table already has it (unversioned files of every earlier shape). */
export async function addColumnIfMissing(db: Db, table: string, column: string, decl: string): Promise<void> {
  const cols = await db.all<{ name: string }>(`PRAGMA table_info(${table})`);
  if (!cols.some((c) => c.name === column)) await db.exec(`ALTER TABLE ${table} ADD COLUMN ${column} ${decl}`);
}
