// The aliases file (sendmail/Postfix aliases(5)), its compiled form, and :include: files. The text
// syntax and its parser are in alias-syntax.ts; this file is the compiled table and the lookups.
//
// Text format:
//   # comment                      lines whose first non-blank character is '#'
//   name: target, target, …        name is a local part (case-insensitive; may be "quoted")
//       target, …                  a line starting with white space continues the one above
// A target is one of
//   user, user@domain              an address; local ones are expanded again
//   \user                          that user's mailbox, with no further alias or .forward expansion
//   |command args                  a pipe (quote it when it holds commas: "|/bin/x a,b")
//   /path/file                     append to a file (mbox format)
//   :include:/path                 the targets listed in that file, read at delivery time
// A whole target may be "quoted" (\" and \\ escape inside); "Name <addr>" and (comments) are
// accepted around addresses. There are no comments after a target on the same line, as in
// sendmail. A duplicate name is a warning and the first entry wins, as with postalias.
// "foo-request" has no special meaning: it is just another alias name. "owner-foo" is where
// errors for list foo go (see resolve.ts).
//
// Compiled form, written by newaliases next to the text file as `<file>.tidemail.json`:
//   {"format":"tidemail-aliases 1","source":"/etc/aliases","sourceMtimeMs":…,"sourceSize":…,
//    "count":N,"aliases":[["name",line,["target",…]],…]}
// Names are lower-cased and sorted; targets are in the canonical unquoted form above
// ("|cmd", "/file", ":include:/path", "\user", "addr"). The file is written to a temp name
// and renamed, so a reader sees the old or the new table, never half of one. The recorded
// mtime and size of the text file say whether the db is current: when the text was edited
// after newaliases, AliasTable reads the text directly (and logs that the db is out of date).
//
// The text is parsed streamed, line by line (newaliases, and the daemon when the table is
// missing or stale — the same parser and the same messages): memory holds the table, not the
// text. A NUL byte makes it a binary file (one error, reading stops); a physical line over
// 64 KiB is an error; only the first 20 errors are listed, then "… and N more"; text quoted in
// an error is escaped and cut short, never raw bytes.
//
// JSON rather than SQLite: the table is small enough to hold in memory (100k aliases load in
// well under a second), a lookup is then a Map get with no I/O, and local/ does not reach into
// queue/'s database wrapper.

import fs from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../errors.js';
import { log } from '../log/log.js';
import { parseAliasesFile, parseTargetFile } from './alias-syntax.js';
export { classifyTarget, excerpt, normalizeTarget, parseAliases, parseAliasesFile, parseTargetFile, type AliasTarget, type ParsedAliases } from './alias-syntax.js';

export interface AliasEntry {
  /** Lower-cased local part. */
  name: string;
  /** Canonical targets, see the top of this file. */
  targets: string[];
  /** 1-based line of the entry in the text file. */
  line: number;
}

const FORMAT = 'tidemail-aliases 1';

/** Where newaliases writes the compiled table of an aliases file. */
export function compiledAliasesPath(file: string): string {
  return `${file}.tidemail.json`;
}

/**
 * newaliases: parses `file` and writes its compiled table atomically. `name` is the path the
 * messages and the table give it (setup compiles a staged copy of what becomes `name`).
 * The table is no more readable than the text (a private aliases file gives a private table).
 * `lint` adds warnings about what the parsed table means (newaliases: aliases-lint.ts).
 * @throws ConfigError for syntax errors or a missing file; fs errors (EACCES…) as they are.
 */
export async function compileAliases(
  file: string,
  name = file,
  lint?: (aliases: ReadonlyMap<string, AliasEntry>) => string[],
): Promise<{ count: number; warnings: string[]; dbPath: string }> {
  const { aliases, warnings, stat: st } = await parseAliasesFile(file, name);
  if (lint) warnings.push(...lint(aliases));
  const dbPath = compiledAliasesPath(file);
  const rows = [...aliases.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  aliases.clear();
  const tmp = path.join(path.dirname(dbPath), `.${path.basename(dbPath)}.${process.pid}.tmp`);
  const mode = (st.mode & 0o644) | 0o600;
  try {
    const out = await fs.promises.open(tmp, 'w', mode);
    try {
      await out.chmod(mode);
      // The same JSON document as one JSON.stringify, written a slice of rows at a time so the
      // whole text is never one string in memory.
      const head = JSON.stringify({ format: FORMAT, source: name, sourceMtimeMs: st.mtimeMs, sourceSize: st.size, count: rows.length });
      await out.write(`${head.slice(0, -1)},"aliases":[`);
      for (let i = 0; i < rows.length; i += 5000) {
        const slice = rows.slice(i, i + 5000).map((e) => JSON.stringify([e.name, e.line, e.targets]));
        await out.write((i ? ',' : '') + slice.join(','));
      }
      await out.write(']}\n');
      await out.sync();
    } finally {
      await out.close();
    }
    await fs.promises.rename(tmp, dbPath);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  }
  return { count: rows.length, warnings, dbPath };
}

interface Compiled {
  sourceMtimeMs: number;
  sourceSize: number;
  aliases: Map<string, AliasEntry>;
}

function readCompiled(text: string, dbPath: string): Compiled {
  const j = JSON.parse(text) as { format?: unknown; sourceMtimeMs?: unknown; sourceSize?: unknown; aliases?: unknown };
  if (j.format !== FORMAT || !Array.isArray(j.aliases)) throw new Error(`${dbPath}: not a ${FORMAT} file`);
  const aliases = new Map<string, AliasEntry>();
  for (const row of j.aliases as [string, number, string[]][]) aliases.set(row[0], { name: row[0], line: row[1], targets: row[2] });
  return { sourceMtimeMs: Number(j.sourceMtimeMs), sourceSize: Number(j.sourceSize), aliases };
}

/**
 * The source mtime and size a compiled table records, from its first 4 KiB (they come before
 * the rows); null when it is no table of ours.
 */
async function readCompiledHead(dbPath: string): Promise<{ sourceMtimeMs: number; sourceSize: number } | null> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(dbPath, 'r');
    const buf = Buffer.alloc(4096);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const text = buf.subarray(0, bytesRead).toString('utf8');
    const m = /^\{"format":"([^"]*)".*?"sourceMtimeMs":([\d.e+-]+),"sourceSize":(\d+)/.exec(text);
    if (!m || m[1] !== FORMAT) {
      log.warn(null, 'aliases: ignoring unreadable compiled table', { file: dbPath, error: `not a ${FORMAT} file` });
      return null;
    }
    return { sourceMtimeMs: Number(m[2]), sourceSize: Number(m[3]) };
  } catch (err) {
    log.warn(null, 'aliases: ignoring unreadable compiled table', { file: dbPath, error: (err as Error).message });
    return null;
  } finally {
    await fh?.close();
  }
}

async function statOrNull(p: string): Promise<fs.Stats | null> {
  try {
    return await fs.promises.stat(p);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

const sig = (st: fs.Stats | null) => (st ? `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}` : '-');

/**
 * Whether pipes and files in an aliases table may run (as the delivering process, the daemon's
 * user, like Postfix's default_privs): only when whoever could write the file could already
 * act as that user — root, or that user itself — and nobody else can write it. Otherwise its
 * addresses still count but its pipes and files are refused: the reason.
 */
function trustedForPrograms(file: string, st: fs.Stats): true | string {
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== uid) return `${file} is owned by uid ${st.uid}, not by root`;
  if (st.mode & 0o022) return `${file} is writable by group or others`;
  return true;
}

/** The aliases of one file, kept current with what is on disk. */
export class AliasTable {
  private aliases = new Map<string, AliasEntry>();
  /** Pipes and files of this table may run, or why not (trustedForPrograms). */
  programs: true | string = true;
  private signature = '';
  private loading: Promise<void> | null = null;
  readonly file: string | null;
  readonly dbPath: string | null;

  constructor(file: string | null) {
    this.file = file;
    this.dbPath = file === null ? null : compiledAliasesPath(file);
  }

  /**
   * Re-reads the compiled table (or the text file, when the table is missing or older) if
   * either changed since the last call: two stat() calls when nothing did.
   * @throws ConfigError when the only usable source is a text file with errors.
   */
  refresh(): Promise<void> {
    this.loading ??= this.load().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  get(name: string): AliasEntry | undefined {
    return this.aliases.get(name.toLowerCase());
  }

  get size(): number {
    return this.aliases.size;
  }

  private async load(): Promise<void> {
    if (this.file === null || this.dbPath === null) return;
    const [src, db] = await Promise.all([statOrNull(this.file), statOrNull(this.dbPath)]);
    const signature = `${sig(src)}|${sig(db)}`;
    if (signature === this.signature) return;

    // Whether the table is current is in its first bytes: the whole table is read only when it
    // is used, so a stale one and the text are never both in memory.
    const head = db ? await readCompiledHead(this.dbPath) : null;
    const current = head !== null && (!src || (head.sourceMtimeMs === src.mtimeMs && head.sourceSize === src.size));
    const compiled = async (): Promise<Compiled | null> => {
      try {
        return readCompiled(await fs.promises.readFile(this.dbPath!, 'utf8'), this.dbPath!);
      } catch (err) {
        log.warn(null, 'aliases: ignoring unreadable compiled table', { file: this.dbPath, error: (err as Error).message });
        return null;
      }
    };
    const table = current ? await compiled() : null;
    if (table) {
      this.aliases = table.aliases;
      this.programs = trustedForPrograms(this.dbPath, db!);
    } else if (src) {
      try {
        this.aliases = (await parseAliasesFile(this.file)).aliases;
        this.programs = trustedForPrograms(this.file, src);
        if (head) log.warn(null, 'aliases: compiled table is older than the text file; using the text (run newaliases)', { file: this.file });
      } catch (err) {
        // A broken edit must not take the aliases away: keep the last good table, like sendmail
        // keeps using aliases.db until newaliases succeeds.
        const old = head ? await compiled() : null;
        if (!old) throw err;
        this.aliases = old.aliases;
        this.programs = trustedForPrograms(this.dbPath, db!);
        log.warn(null, 'aliases: text file has errors; using the older compiled table', { file: this.file, error: (err as Error).message.split('\n')[0] });
      }
    } else {
      this.aliases = new Map();
    }
    if (this.programs !== true && [...this.aliases.values()].some((e) => e.targets.some((t) => t.startsWith('|') || t.startsWith('/')))) {
      log.warn(null, 'aliases: pipes and files in this table are refused', { file: this.file, reason: this.programs });
    }
    this.signature = signature;
  }
}

export interface TargetFile {
  targets: string[];
  errors: string[];
  /** Whether pipes and files listed here may be honoured, and why not. */
  safe: boolean;
  unsafeReason?: string;
}

/**
 * Reads a target file (:include: or .forward) through one descriptor, so the ownership and
 * mode we check belong to the bytes we read. `owners` are the uids trusted to own it.
 * @throws fs errors (ENOENT, EACCES, …) as they are.
 */
export async function readTargetFile(file: string, owners: readonly number[]): Promise<TargetFile> {
  const fd = await fs.promises.open(file, 'r');
  try {
    const st = await fd.stat();
    if (!st.isFile()) throw Object.assign(new Error(`${file} is not a regular file`), { code: 'EISDIR' });
    if (st.size > 1 << 20) throw Object.assign(new Error(`${file} is larger than 1 MiB`), { code: 'EFBIG' });
    const { targets, errors } = parseTargetFile(await fd.readFile('utf8'), file);
    let unsafeReason: string | undefined;
    if (!owners.includes(st.uid)) unsafeReason = `${file} is owned by uid ${st.uid}`;
    else if (st.mode & 0o022) unsafeReason = `${file} is writable by group or others`;
    return { targets, errors, safe: !unsafeReason, ...(unsafeReason ? { unsafeReason } : {}) };
  } finally {
    await fd.close();
  }
}
