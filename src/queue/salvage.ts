// `tidemail queue salvage`: a new queue.sqlite from what can still be read of a damaged one.
//
// The damaged file (with its -wal/-shm) is first renamed to queue.sqlite.broken-DATE, never
// deleted or written: it is opened read-only. Every table is read row by row in rowid order
// (the table b-trees, not the indexes); a row on a bad page fails alone and the walk steps past
// it, so one bad leaf costs the rows on it, not the table. Without the sqlite3 shell's .recover
// this is what Node can do through the driver.
//
// A message goes back into the queue only when it is whole: its message row, at least one
// recipient, and chunks adding up to its recorded size (seq gaps are normal after a milter
// rewrite, so size is the test). What is readable of the others is written to
// salvage-DATE/MSGID.partial for a human to look at.

import fs from 'node:fs';
import path from 'node:path';
import { Db } from './db.js';
import { QUEUE_FILE, writeMarker } from './integrity.js';
import { migrate } from './migrate.js';
import { QUEUE_MIGRATIONS } from './sqlite.js';
import { STATE_EXIT, StateError } from './state-error.js';

export interface SalvageReport {
  broken: string;
  queue: string;
  messagesFound: number;
  messagesSaved: number;
  recipientsSaved: number;
  /** Message ids that could not be put back whole. */
  lost: string[];
  partialDir: string | null;
  rowsUnreadable: number;
}

const MAGIC = 'SQLite format 3\0';
// Consecutive unreadable rowids after which a table walk stops (the end of a broken subtree).
const MAX_SKIP = 200_000;

const stamp = () => new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Calls `each` for every readable row of `table`, in rowid order; returns the unreadable count. */
async function walk(db: Db, table: string, each: (row: Record<string, unknown>) => Promise<void>): Promise<number> {
  let max: number;
  try {
    max = (await db.get<{ m: number | null }>(`SELECT max(rowid) AS m FROM ${table}`))?.m ?? 0;
  } catch {
    max = Number.MAX_SAFE_INTEGER; // the right edge is damaged: walk until MAX_SKIP misses
  }
  let after = 0;
  let bad = 0;
  let skipped = 0;
  while (after < max && skipped < MAX_SKIP) {
    let row: Record<string, unknown> | undefined;
    try {
      row = await db.get<Record<string, unknown>>(`SELECT rowid AS __rowid, * FROM ${table} WHERE rowid > ? ORDER BY rowid LIMIT 1`, [after]);
    } catch {
      bad++;
      skipped++;
      after++;
      continue;
    }
    if (!row) break;
    skipped = 0;
    after = Number(row.__rowid);
    delete row.__rowid;
    await each(row);
  }
  return bad;
}

const isStr = (v: unknown) => typeof v === 'string';
const isInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v);
// Random bytes can decode as a well-formed but meaningless row: keep only rows of the right types.
const VALID: Record<string, (r: Record<string, unknown>) => boolean> = {
  messages: (r) => isStr(r.id) && (r.id as string).length === 16 && isStr(r.sender) && isInt(r.created) && isInt(r.size) && isStr(r.via),
  recipients: (r) => isStr(r.env_id) && isStr(r.msgid) && (r.env_id as string).startsWith(r.msgid as string) && isStr(r.address) && isStr(r.status) && isInt(r.next_attempt),
  chunks: (r) => isStr(r.msgid) && isInt(r.seq) && Buffer.isBuffer(r.data),
  events: (r) => isInt(r.t) && isStr(r.msgid) && isStr(r.level) && isStr(r.event) && isStr(r.fields),
};

export async function salvageQueue(stateDir: string): Promise<SalvageReport> {
  const file = path.join(stateDir, QUEUE_FILE);
  let head = Buffer.alloc(0);
  try {
    head = fs.readFileSync(file).subarray(0, 16);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!head.length) throw new StateError(`${file} is missing or empty: there is nothing salvage can read; restore it from a backup`, 66);
  if (head.toString('latin1') !== MAGIC) {
    throw new StateError(`${file} is not an SQLite database at all: salvage cannot read it; restore it from a backup (the file is left as it is)`, STATE_EXIT.IOERR);
  }

  // 1. Move the damaged set aside: SQLite finds a WAL by name, so it moves along.
  const when = stamp();
  const broken = `${file}.broken-${when}`;
  for (const sfx of ['', '-wal', '-shm', '-journal']) {
    if (fs.existsSync(file + sfx)) fs.renameSync(file + sfx, broken + sfx);
  }
  fsyncDir(stateDir);

  const tmp = `${file}.salvage-tmp`;
  fs.rmSync(tmp, { force: true });
  fs.rmSync(`${tmp}-journal`, { force: true });
  const src = await Db.open(broken, true);
  let tables: Set<string>;
  try {
    tables = new Set((await src.all<{ name: string }>(`SELECT name FROM sqlite_master WHERE type = 'table'`)).map((r) => r.name));
  } catch (err) {
    // Page 1 (the schema) is gone: nothing can be found. Put the file back as it was.
    await src.close().catch(() => undefined);
    for (const sfx of ['', '-wal', '-shm', '-journal']) if (fs.existsSync(broken + sfx)) fs.renameSync(broken + sfx, file + sfx);
    throw new StateError(`${file}: its schema page cannot be read (${(err as Error).message}); salvage cannot find any table in it. Restore it from a backup (the file is left as it is)`, STATE_EXIT.IOERR);
  }
  const dst = await Db.open(tmp);
  const report: SalvageReport = { broken, queue: file, messagesFound: 0, messagesSaved: 0, recipientsSaved: 0, lost: [], partialDir: null, rowsUnreadable: 0 };
  try {
    await dst.exec('PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;');
    await migrate(dst, tmp, QUEUE_MIGRATIONS);
    await dst.exec('BEGIN');
    for (const table of ['messages', 'recipients', 'chunks', 'events']) {
      if (!tables.has(table)) continue; // an old shape without events
      const cols = new Set((await dst.all<{ name: string }>(`PRAGMA table_info(${table})`)).map((c) => c.name));
      report.rowsUnreadable += await walk(src, table, async (row) => {
        if (!VALID[table]!(row)) {
          report.rowsUnreadable++;
          return;
        }
        const names = Object.keys(row).filter((k) => cols.has(k));
        await dst.run(`INSERT OR IGNORE INTO ${table} (${names.join(', ')}) VALUES (${names.map(() => '?').join(', ')})`, names.map((k) => row[k]));
      });
    }
    // 2. Only whole messages stay; the readable rest of the others goes to salvage-DATE/.
    const ids = new Set<string>();
    for (const q of ['SELECT id FROM messages', 'SELECT DISTINCT msgid AS id FROM recipients', 'SELECT DISTINCT msgid AS id FROM chunks']) {
      for (const r of await dst.all<{ id: string }>(q)) ids.add(r.id);
    }
    report.messagesFound = ids.size;
    const whole = new Set(
      (
        await dst.all<{ id: string }>(`SELECT m.id FROM messages m
          WHERE EXISTS (SELECT 1 FROM recipients r WHERE r.msgid = m.id)
            AND m.size = (SELECT COALESCE(SUM(length(c.data)), -1) FROM chunks c WHERE c.msgid = m.id)`)
      ).map((r) => r.id),
    );
    for (const id of [...ids].sort()) {
      if (whole.has(id)) continue;
      report.lost.push(id);
      const parts = await dst.all<{ data: Buffer }>('SELECT data FROM chunks WHERE msgid = ? ORDER BY seq', [id]);
      const env = await dst.get<Record<string, unknown>>('SELECT sender, created, size FROM messages WHERE id = ?', [id]);
      const rcpts = (await dst.all<{ address: string }>('SELECT address FROM recipients WHERE msgid = ?', [id])).map((r) => r.address);
      report.partialDir ??= path.join(stateDir, `salvage-${when}`);
      fs.mkdirSync(report.partialDir, { recursive: true, mode: 0o700 });
      const note = `# tidemail queue salvage: message ${id} could not be recovered whole\n# sender: ${env ? String(env.sender) : '(unreadable)'}; recipients: ${rcpts.join(', ') || '(unreadable)'}; size recorded: ${env ? String(env.size) : '?'}; bytes readable: ${parts.reduce((n, p) => n + p.data.length, 0)}\n`;
      fs.writeFileSync(path.join(report.partialDir, `${id}.partial`), Buffer.concat([Buffer.from(note), ...parts.map((p) => p.data)]), { mode: 0o600 });
      for (const t of ['chunks', 'recipients']) await dst.run(`DELETE FROM ${t} WHERE msgid = ?`, [id]);
      await dst.run('DELETE FROM messages WHERE id = ?', [id]);
    }
    report.messagesSaved = whole.size;
    report.recipientsSaved = (await dst.get<{ n: number }>('SELECT COUNT(*) AS n FROM recipients'))?.n ?? 0;
    await dst.exec('COMMIT');
  } finally {
    await src.close().catch(() => undefined);
    await dst.close();
  }
  // 3. The new queue takes the name; the marker says a queue exists here.
  fs.renameSync(tmp, file);
  fsyncDir(stateDir);
  writeMarker(stateDir);
  return report;
}
