// The aliases text format (see aliases.ts for the whole story): targets, their canonical
// form, and the streamed parser that newaliases, check and the daemon share.

import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import type { AliasEntry } from './aliases.js';

export type AliasTarget =
  | { kind: 'address'; address: string }
  | { kind: 'user'; user: string }
  | { kind: 'pipe'; command: string }
  | { kind: 'file'; path: string }
  | { kind: 'include'; path: string };

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
