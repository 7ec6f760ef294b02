// The aliases file (sendmail/Postfix aliases(5)), its compiled form, and :include: files.
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

export interface AliasEntry {
  /** Lower-cased local part. */
  name: string;
  /** Canonical targets, see the top of this file. */
  targets: string[];
  /** 1-based line of the entry in the text file. */
  line: number;
}

export type AliasTarget =
  | { kind: 'address'; address: string }
  | { kind: 'user'; user: string }
  | { kind: 'pipe'; command: string }
  | { kind: 'file'; path: string }
  | { kind: 'include'; path: string };

const FORMAT = 'tidemail-aliases 1';

/** Where newaliases writes the compiled table of an aliases file. */
export function compiledAliasesPath(file: string): string {
  return `${file}.tidemail.json`;
}

/** Reads a canonical target string. */
export function classifyTarget(target: string): AliasTarget {
  if (target.startsWith('|')) return { kind: 'pipe', command: target.slice(1) };
  if (target.startsWith('/')) return { kind: 'file', path: target };
  if (target.startsWith('\\')) return { kind: 'user', user: target.slice(1) };
  if (/^:include:/i.test(target)) return { kind: 'include', path: target.slice(':include:'.length) };
  return { kind: 'address', address: target };
}

interface Item {
  text: string;
  offset: number;
}

/** Splits a target list at commas outside "quotes" and (comments). */
function splitItems(s: string): { items: Item[]; error?: { offset: number; message: string } } {
  const items: Item[] = [];
  let start = 0;
  let quote = -1;
  let paren = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (quote >= 0) {
      if (c === '\\') i++;
      else if (c === '"') quote = -1;
    } else if (c === '"') quote = i;
    else if (c === '(') paren++;
    else if (c === ')' && paren > 0) paren--;
    else if (c === ',' && paren === 0) {
      items.push({ text: s.slice(start, i), offset: start });
      start = i + 1;
    }
  }
  if (quote >= 0) return { items, error: { offset: quote, message: 'unterminated quoted string' } };
  items.push({ text: s.slice(start), offset: start });
  return { items };
}

/** "…" → its contents, when the whole string is one quoted string; else null. */
function unquoteWhole(s: string): string | null {
  if (!s.startsWith('"')) return null;
  let out = '';
  for (let i = 1; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) out += s[++i];
    else if (c === '"') return i === s.length - 1 ? out : null;
    else out += c;
  }
  return null;
}

/** Removes (comments) outside quotes. */
function stripComments(s: string): string {
  let out = '';
  let quoted = false;
  let paren = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (paren === 0 && c === '"' && s[i - 1] !== '\\') quoted = !quoted;
    if (!quoted && c === '(') paren++;
    else if (!quoted && c === ')' && paren > 0) paren--;
    else if (paren === 0) out += c;
  }
  return out;
}

/** One raw list item → canonical target, or a problem. Empty items (a trailing comma) give null. */
export function normalizeTarget(raw: string): { target: string } | { error: string } | null {
  let t = raw.trim();
  if (!t) return null;
  const inner = unquoteWhole(t);
  const quoted = inner !== null;
  if (quoted) t = inner.trim();
  else {
    t = stripComments(t).trim();
    const angle = /<([^<>]*)>\s*$/.exec(t);
    if (angle) t = angle[1]!.trim();
  }
  if (!t) return { error: 'empty target' };
  if (t.startsWith('|')) {
    const command = t.slice(1).trim();
    return command ? { target: `|${command}` } : { error: 'pipe target without a command' };
  }
  if (/^:include:/i.test(t)) {
    const p = t.slice(':include:'.length).trim();
    if (!p.startsWith('/')) return { error: `:include: needs an absolute path, got "${excerpt(p)}"` };
    return { target: `:include:${p}` };
  }
  if (t.startsWith('/')) return { target: t };
  if (t.startsWith('\\')) {
    const user = t.slice(1).trim();
    if (!user || /[\s@,]/.test(user)) return { error: `"${excerpt(t)}" is not a user name (write \\user)` };
    return { target: `\\${user}` };
  }
  if (!quoted && /\s/.test(t.replace(/"(?:[^"\\]|\\.)*"/g, ''))) {
    return { error: `"${excerpt(t)}" is not an address (quote a command with arguments: "|/path/cmd arg")` };
  }
  if (t.endsWith('@')) return { error: `"${excerpt(t)}" is not an address` };
  return { target: t };
}

/** Parses a list of targets; `lineAt` maps an offset in `s` to a line for errors. */
function parseTargetItems(s: string, where: (offset: number) => string): { targets: string[]; errors: string[] } {
  const { items, error } = splitItems(s);
  const targets: string[] = [];
  const errors: string[] = [];
  if (error) errors.push(`${where(error.offset)}: ${error.message}`);
  for (const item of items) {
    const r = normalizeTarget(item.text);
    if (!r) continue;
    if ('error' in r) errors.push(`${where(item.offset + item.text.search(/\S/))}: ${r.error}`);
    else targets.push(r.target);
  }
  return { targets, errors };
}

/**
 * Parses an :include: file or a ~/.forward: targets one per line or comma-separated,
 * '#' comment lines, blank lines. Errors come back as "file:line: problem" strings.
 */
export function parseTargetFile(source: string, file: string): { targets: string[]; errors: string[] } {
  // The same rules as the aliases file: a binary file is one error, and errors are capped.
  if (source.includes('\0')) return { targets: [], errors: [`${file}: binary data (a NUL byte); not a list of addresses`] };
  const targets: string[] = [];
  const errors: string[] = [];
  let count = 0;
  source.split('\n').forEach((raw, i) => {
    const line = raw.replace(/\r$/, '');
    if (/^\s*(#|$)/.test(line)) return;
    const r = parseTargetItems(line, () => `${file}:${i + 1}`);
    targets.push(...r.targets);
    for (const e of r.errors) if (count++ < SHOWN) errors.push(e);
  });
  if (count > SHOWN) errors.push(`${file}: … and ${count - SHOWN} more errors (${count} in all)`);
  return { targets, errors };
}

export interface ParsedAliases {
  aliases: Map<string, AliasEntry>;
  /** "file:line: …" notes that do not stop compilation (duplicate names). */
  warnings: string[];
}

/** How many errors (and warnings) are shown; the rest are counted. */
const SHOWN = 20;
/** A physical line longer than this is an error, and is not held in memory whole. */
const MAX_LINE = 64 * 1024;
/** Read size for the streamed parse. */
const CHUNK = 64 * 1024;

/**
 * Text from the file, fit for an error message: control characters (and bytes that were not
 * UTF-8) escaped, at most `max` characters. A terminal must never get raw file bytes.
 */
export function excerpt(s: string, max = 40): string {
  let out = '';
  let n = 0;
  for (const ch of s) {
    if (n++ >= max) return `${out}…`;
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f || (c >= 0x80 && c < 0xa0)) out += `\\x${c.toString(16).padStart(2, '0')}`;
    else if (c === 0xfffd) out += '\\ufffd';
    else out += ch;
  }
  return out;
}

/** The message for a file that is not text at all (checked before any line is parsed). */
function binaryError(file: string, offset: number): ConfigError {
  return new ConfigError(`${file}: not an aliases file: it holds binary data (a NUL byte at offset ${offset})\n  fix: point [local] aliases at the text file ("name: target, …" lines); newaliases writes the compiled table itself`);
}

/**
 * The aliases parser, fed one physical line at a time (from a string or a streamed file), so
 * memory holds the table being built, not the text. Errors and warnings beyond the first
 * SHOWN are counted, not kept.
 */
class AliasParser {
  readonly aliases = new Map<string, AliasEntry>();
  private readonly errors: string[] = [];
  private readonly warnings: string[] = [];
  private errorCount = 0;
  private warningCount = 0;
  /** The logical line being collected: a first line plus its continuations. */
  private cur: { text: string; pieces: { offset: number; line: number }[] } | null = null;

  constructor(private readonly file: string) {}

  line(raw: string, no: number): void {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (/^\s*(#|$)/.test(line)) return;
    if (/^\s/.test(line)) {
      if (!this.cur) this.error(`${this.file}:${no}: continuation line (it starts with white space) with no alias above it`);
      else {
        this.cur.pieces.push({ offset: this.cur.text.length + 1, line: no });
        this.cur.text += ' ' + line;
      }
      return;
    }
    this.flush();
    this.cur = { text: line, pieces: [{ offset: 0, line: no }] };
  }

  /** A line that was too long to keep: reported, and it ends the entry above it. */
  tooLong(no: number): void {
    this.flush();
    this.error(`${this.file}:${no}: line longer than ${MAX_LINE} bytes (continue a long entry on indented lines)`);
  }

  /** @throws ConfigError listing the first errors as file:line, and how many there were. */
  finish(): ParsedAliases {
    this.flush();
    if (this.errorCount) {
      const rest = this.errorCount - this.errors.length;
      const more = rest > 0 ? `\n  … and ${rest} more errors (${this.errorCount} in all)` : this.errorCount > 1 ? `\n  (${this.errorCount} errors)` : '';
      throw new ConfigError(`${this.errors.join('\n')}${more}\n  fix: correct these lines, then run newaliases`);
    }
    const warnings = [...this.warnings];
    if (this.warningCount > warnings.length) warnings.push(`${this.file}: … and ${this.warningCount - warnings.length} more duplicate aliases`);
    return { aliases: this.aliases, warnings };
  }

  private error(message: string): void {
    if (this.errorCount++ < SHOWN) this.errors.push(message);
  }

  private flush(): void {
    const cur = this.cur;
    this.cur = null;
    if (!cur) return;
    const { file } = this;
    const { text, pieces } = cur;
    const first = pieces[0]!.line;
    const where = (offset: number) => `${file}:${[...pieces].reverse().find((p) => p.offset <= offset)?.line ?? first}`;
    let name: string;
    let rest: number;
    if (text.startsWith('"')) {
      const m = /^"((?:[^"\\]|\\.)*)"\s*:/.exec(text);
      if (!m) return this.error(`${file}:${first}: expected "name": targets`);
      name = m[1]!.replace(/\\(.)/g, '$1');
      rest = m[0].length;
    } else {
      const colon = text.indexOf(':');
      if (colon < 0) return this.error(`${file}:${first}: missing ':' after the alias name (write name: target, target)`);
      name = text.slice(0, colon).trim();
      rest = colon + 1;
      if (/\s/.test(name)) return this.error(`${file}:${first}: alias name "${excerpt(name)}" contains white space (quote it, or indent continuation lines)`);
    }
    name = name.toLowerCase();
    if (!name) return this.error(`${file}:${first}: empty alias name`);
    if (name.includes('@')) return this.error(`${file}:${first}: alias names are local parts, not addresses: "${excerpt(name)}" (map whole addresses in [local.virtual])`);
    const r = parseTargetItems(text.slice(rest), (off) => where(off + rest));
    for (const e of r.errors) this.error(e);
    if (!r.errors.length && !r.targets.length) this.error(`${file}:${first}: alias "${excerpt(name)}" has no targets`);
    if (r.errors.length || !r.targets.length) return;
    const prev = this.aliases.get(name);
    if (prev) {
      if (this.warningCount++ < SHOWN) this.warnings.push(`${file}:${first}: duplicate alias "${excerpt(name)}" (first at line ${prev.line}); the first one is used`);
      return;
    }
    this.aliases.set(name, { name, targets: r.targets, line: first });
  }
}

/**
 * Parses aliases text.
 * @throws ConfigError listing the bad lines as file:line (the first 20, and how many).
 */
export function parseAliases(source: string, file: string): ParsedAliases {
  const nul = source.indexOf('\0');
  if (nul >= 0) throw binaryError(file, Buffer.byteLength(source.slice(0, nul)));
  const p = new AliasParser(file);
  let no = 0;
  let start = 0;
  for (;;) {
    const nl = source.indexOf('\n', start);
    const line = source.slice(start, nl < 0 ? undefined : nl);
    no++;
    if (Buffer.byteLength(line) > MAX_LINE) p.tooLong(no);
    else if (nl >= 0 || line) p.line(line, no);
    if (nl < 0) break;
    start = nl + 1;
  }
  return p.finish();
}

/**
 * Parses the aliases file open as `fh`, streamed in chunks: memory holds the table, one line
 * and one chunk. A NUL byte anywhere — checked chunk by chunk, before the lines of that chunk
 * are parsed — makes it a binary file: one error, and reading stops.
 * `name` is what messages call the file.
 */
async function parseAliasesFrom(fh: fs.promises.FileHandle, name: string): Promise<ParsedAliases> {
  const p = new AliasParser(name);
  const decoder = new TextDecoder('utf-8');
  const buf = Buffer.allocUnsafe(CHUNK);
  let carry: Buffer[] = [];
  let carryLength = 0;
  let tooLong = false;
  let no = 0;
  let offset = 0;
  const end = (piece: Buffer) => {
    no++;
    if (tooLong || carryLength + piece.length > MAX_LINE) p.tooLong(no);
    else p.line(decoder.decode(carry.length ? Buffer.concat([...carry, piece]) : piece), no);
    carry = [];
    carryLength = 0;
    tooLong = false;
  };
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, CHUNK, null);
    if (!bytesRead) break;
    const chunk = buf.subarray(0, bytesRead);
    const nul = chunk.indexOf(0);
    if (nul >= 0) throw binaryError(name, offset + nul);
    offset += bytesRead;
    let start = 0;
    for (let nl = chunk.indexOf(10, start); nl >= 0; nl = chunk.indexOf(10, start)) {
      end(chunk.subarray(start, nl));
      start = nl + 1;
    }
    if (start < chunk.length && !tooLong) {
      // The chunk buffer is reused: keep a copy of the unfinished line, unless it is too long already.
      carry.push(Buffer.from(chunk.subarray(start)));
      carryLength += chunk.length - start;
      if (carryLength > MAX_LINE) {
        tooLong = true;
        carry = [];
      }
    }
  }
  if (carryLength || tooLong) end(Buffer.alloc(0));
  return p.finish();
}

/** Opens an aliases file; a missing one is a ConfigError saying what to do. */
async function openAliases(file: string, name: string): Promise<fs.promises.FileHandle> {
  try {
    return await fs.promises.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new ConfigError(`${name}: no such file\n  fix: create it (one "name: target" per line) or point [local] aliases elsewhere`, { cause: err });
    }
    throw err;
  }
}

/**
 * Reads and parses an aliases file (streamed), as newaliases does: the daemon's fallback to the
 * text gives the same errors.
 */
export async function parseAliasesFile(file: string, name = file): Promise<ParsedAliases & { stat: fs.Stats }> {
  const fh = await openAliases(file, name);
  try {
    const stat = await fh.stat();
    if (!stat.isFile()) throw new ConfigError(`${name}: not a regular file\n  fix: point [local] aliases at the aliases text file`);
    return { ...(await parseAliasesFrom(fh, name)), stat };
  } finally {
    await fh.close();
  }
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
