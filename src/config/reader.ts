// Typed access to a parsed TOML document with errors that name file:line:column, the key, what
// was expected, and a fix with an example. smol-toml reports syntax errors with a position; for
// semantic errors (wrong type, unknown key) we find the key by scanning the source, which is
// enough for hand-written files.

import { ConfigError } from '../errors.js';
import { formatDuration, formatSize, parseDuration, parseSize } from './units.js';

export type TomlTable = Record<string, unknown>;

export interface KeyPosition {
  line: number;
  /** 1-based column where the key (or the `[table]` header) starts. */
  column: number;
}

/**
 * Finds where a dotted key path is set, or where its table starts. A path segment "fetch#1"
 * names the second `[[fetch]]` entry; without "#n" the first entry matches.
 */
export function positionOfKey(source: string, path: readonly string[]): KeyPosition | null {
  const lines = source.split('\n');
  let table = '';
  const want = path.join('.');
  const plain = (s: string) => s.replace(/#\d+(?=\.|$)/g, '');
  const seen = new Map<string, number>();
  let loose: KeyPosition | null = null;
  const consider = (full: string, pos: KeyPosition): boolean => {
    if (full === want || full.startsWith(want + '.')) return true;
    if (!loose && (plain(full) === plain(want) || plain(full).startsWith(plain(want) + '.'))) loose = pos;
    return false;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*$/, '');
    const header = /^(\s*)\[(\[?)\s*([^\]]+?)\s*\]\]?\s*$/.exec(line);
    if (header) {
      const name = header[3]!.split('.').map((s) => s.trim().replace(/^"|"$/g, '')).join('.');
      if (header[2]) {
        const n = seen.get(name) ?? 0; // [[array.of.tables]]: the n-th entry
        seen.set(name, n + 1);
        table = `${name}#${n}`;
      } else table = name;
      const pos = { line: i + 1, column: header[1]!.length + 1 };
      if (consider(table, pos)) return pos; // the [table] line itself
      continue;
    }
    const kv = /^(\s*)([A-Za-z0-9_."-]+(?:\s*\.\s*[A-Za-z0-9_"-]+)*)\s*=/.exec(line);
    if (!kv) continue;
    const key = kv[2]!.split('.').map((s) => s.trim().replace(/^"|"$/g, '')).join('.');
    const pos = { line: i + 1, column: kv[1]!.length + 1 };
    if (consider(table ? `${table}.${key}` : key, pos)) return pos;
  }
  return loose;
}

/** The 1-based line where a dotted key path is set, or where its table starts. */
export function lineOfKey(source: string, path: readonly string[]): number | null {
  return positionOfKey(source, path)?.line ?? null;
}

/** One setting as the program used it: for `config show` and for "belongs in [table]". */
export interface SettingRead {
  /** The dotted key as written in the file ("smtp.command_timeout"; "fetch#1.user" for arrays). */
  key: string;
  /** The same key as its parts: a quoted part may hold dots (`"lan.example" = …`). */
  path: readonly string[];
  /** The effective value, in the file's own notation ("5m", "25M", ["a", "b"]). */
  value: unknown;
  /** file:line:col when the file set it, else "default". */
  from: string;
}

/** Every setting the readers of one file have read, shared by the top reader and its sub-tables. */
export class ReadLog {
  readonly settings = new Map<string, SettingRead>();
  /** Table path ("smtp", "" for the top) → the keys read there. */
  readonly tables = new Map<string, Set<string>>();
}

const tableName = (path: readonly string[]) => path.map((k) => k.replace(/#\d+$/, '')).join('.');

/** Reads one table of a config file; `path` is where the table sits in the file. */
export class ConfigReader {
  private readonly seen = new Set<string>();
  constructor(
    readonly file: string,
    readonly source: string,
    readonly table: TomlTable,
    readonly path: readonly string[] = [],
    readonly log: ReadLog = new ReadLog(),
  ) {
    // `config show` collects the settings of every file read meanwhile (routes/*.toml too).
    if (path.length === 0 && ConfigReader.collecting && !ConfigReader.collecting.some((c) => c.log === log)) ConfigReader.collecting.push({ file, log });
  }

  /** Set by `config show` around loading: each file's top reader adds its ReadLog here. */
  static collecting: { file: string; log: ReadLog }[] | null = null;

  /** Records what `key` was used as; `shown` is the value in the file's notation. */
  private note(key: string, shown: unknown): void {
    const full = [...this.path, key].join('.');
    const set = this.table[key] !== undefined;
    this.log.settings.set(full, { key: full, path: [...this.path, key], value: shown, from: set ? this.where(key) : 'default' });
  }

  /**
   * file:line:column of a key. A key that is missing points at its table (or a sibling dotted
   * key), and a missing top-level key at line 1, so there is always a place for an editor to jump to.
   */
  where(key?: string): string {
    const p = key === undefined ? this.path : [...this.path, key];
    const pos = positionOfKey(this.source, p) ?? (this.path.length ? positionOfKey(this.source, this.path) : null) ?? { line: 1, column: 1 };
    return `${this.file}:${pos.line}:${pos.column}`;
  }

  fail(key: string | undefined, problem: string, fix: string): never {
    const name = [...this.path, ...(key === undefined ? [] : [key])].map((k) => k.replace(/#\d+$/, '')).join('.');
    throw new ConfigError(`${this.where(key)}: ${name ? `'${name}' ` : ''}${problem}\n  fix: ${fix}`);
  }

  has(key: string): boolean {
    return this.table[key] !== undefined;
  }

  private raw(key: string): unknown {
    this.seen.add(key);
    const t = tableName(this.path);
    if (!this.log.tables.has(t)) this.log.tables.set(t, new Set());
    this.log.tables.get(t)!.add(key);
    return this.table[key];
  }

  string(key: string, dflt: string): string;
  string(key: string): string | undefined;
  string(key: string, dflt?: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) {
      if (dflt !== undefined) this.note(key, dflt);
      return dflt;
    }
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${describe(v)}`, `write it in quotes, e.g. ${key} = "value"`);
    this.note(key, v);
    return v;
  }

  oneOf<T extends string>(key: string, choices: readonly T[], dflt: T): T {
    const v = this.string(key, dflt);
    if (!(choices as readonly string[]).includes(v)) {
      this.fail(key, `is "${v}", which is not one of ${choices.map((c) => `"${c}"`).join(', ')}`, `use one of those values, e.g. ${key} = "${dflt}"`);
    }
    return v as T;
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.raw(key);
    this.note(key, v ?? dflt);
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${describe(v)}`, `write ${key} = true or ${key} = false (no quotes)`);
    return v;
  }

  integer(key: string, dflt: number, min = 0): number {
    const v = this.raw(key);
    this.note(key, v ?? dflt);
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      this.fail(key, `must be a whole number ≥ ${min}, got ${describe(v)}`, `write e.g. ${key} = ${Math.max(min, dflt)}`);
    }
    return v;
  }

  duration(key: string, dflt: number): number {
    const v = this.raw(key);
    this.note(key, v === undefined ? formatDuration(dflt) : v);
    if (v === undefined) return dflt;
    // A bare number has no unit, and 30 could mean seconds or minutes: say which, in the file.
    // Zero is the same in every unit.
    const unitless = typeof v === 'number' || (typeof v === 'string' && /^\s*\d+(\.\d+)?\s*$/.test(v));
    if (unitless && Number(v) !== 0) {
      this.fail(key, `is ${describe(v)}, a number without a unit`, `write "${Number(v)}s" or "${Number(v)}m" (units: ms, s, m, h, d, w), e.g. ${key} = "${Number(v)}s"`);
    }
    const ms = parseDuration(v);
    if (ms === null) this.fail(key, `is not a duration: ${describe(v)}`, `write e.g. ${key} = "30s", "5m", "4h" or "5d"`);
    return ms;
  }

  size(key: string, dflt: number): number {
    const v = this.raw(key);
    this.note(key, v === undefined ? formatSize(dflt) : v);
    if (v === undefined) return dflt;
    const n = parseSize(v);
    if (n === null) this.fail(key, `is not a size: ${describe(v)}`, `write e.g. ${key} = "25M" (K, M and G are powers of 1024)`);
    return n;
  }

  /** A size, or null for "auto" (also when unset): the caller works the value out later. */
  sizeOrAuto(key: string): number | null {
    const v = this.raw(key);
    this.note(key, v ?? 'auto');
    if (v === undefined || v === 'auto') return null;
    const n = parseSize(v);
    if (n === null) this.fail(key, `is not a size: ${describe(v)}`, `write e.g. ${key} = "25M" (K, M and G are powers of 1024), or "auto"`);
    return n;
  }

  stringList(key: string, dflt: string[]): string[] {
    const v = this.raw(key);
    this.note(key, v ?? dflt);
    if (v === undefined) return dflt;
    if (typeof v === 'string') return [v];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      this.fail(key, `must be a list of strings, got ${describe(v)}`, `write e.g. ${key} = ["one", "two"]`);
    }
    return v as string[];
  }

  /** A sub-table (`[smtp]` or `auth.user = …`), empty when absent. */
  sub(key: string): ConfigReader {
    const v = this.raw(key);
    if (v !== undefined && (typeof v !== 'object' || v === null || Array.isArray(v))) {
      this.fail(key, `must be a table, got ${describe(v)}`, `write it as [${[...this.path, key].map((k) => k.replace(/#\d+$/, '')).join('.')}] with keys below it`);
    }
    return new ConfigReader(this.file, this.source, (v as TomlTable) ?? {}, [...this.path, key], this.log);
  }

  /** Arrays of tables (`[[fetch]]`). */
  subList(key: string): ConfigReader[] {
    const v = this.raw(key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'object' || x === null || Array.isArray(x))) {
      this.fail(key, `must be a list of tables`, `write each entry as [[${key}]]`);
    }
    return (v as TomlTable[]).map((t, i) => new ConfigReader(this.file, this.source, t, [...this.path, `${key}#${i}`], this.log));
  }

  /**
   * Call after reading every known key: anything left is a typo or an unsupported option. The fix
   * names a close key here ("did you mean auth.user"), or the table the key belongs to when another
   * table of this file (read before this call) knows it.
   */
  rejectUnknown(known: readonly string[] = []): void {
    for (const key of Object.keys(this.table)) {
      if (this.seen.has(key) || known.includes(key)) continue;
      const all = [...this.seen, ...known];
      const here = tableName(this.path);
      const elsewhere = [...this.log.tables].filter(([t, keys]) => t !== here && keys.has(key)).map(([t]) => t);
      if (elsewhere.length) {
        const to = elsewhere.map((t) => (t ? `[${t}]` : 'the top of the file (before any [table])')).join(' or ');
        this.fail(key, `is not a setting of ${here ? `[${here}]` : 'the top level'}; it belongs in ${to}`, `move it to ${to}`);
      }
      const guess = bestGuess(key, all);
      this.fail(key, `is not a known setting`, guess ? `did you mean '${guess}'?` : `remove it (known here: ${all.sort().join(', ') || 'none'})`);
    }
  }
}

/** Unterminated string? `line` is where the TOML parser stopped; the column of the open quote, or null. */
export function openQuoteColumn(source: string, line: number): number | null {
  const text = source.split('\n')[line - 1];
  if (text === undefined) return null;
  let open: { quote: string; col: number } | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (open) {
      if (open.quote === '"' && c === '\\') i++; // an escape in a basic string
      else if (c === open.quote) open = null;
    } else if (c === '#') break;
    else if (c === '"' || c === "'") {
      // Three quotes open a multi-line string, which may span lines: not this case.
      if (text.startsWith(c.repeat(3), i)) return null;
      open = { quote: c, col: i + 1 };
    }
  }
  return open?.col ?? null;
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return 'a table';
  return JSON.stringify(v);
}

/** The known key most like `key`: one edit apart, the same but for - and _, or one a prefix of the other. */
function bestGuess(key: string, known: readonly string[]): string | undefined {
  return known.find((k) => closeTo(k, key)) ?? known.find((k) => k.length >= 3 && key.length >= 3 && k !== key && (key.startsWith(k) || k.startsWith(key)));
}

function closeTo(a: string, b: string): boolean {
  if (a === b) return false;
  if (a.replace(/[-_]/g, '') === b.replace(/[-_]/g, '')) return true;
  // one edit apart
  if (Math.abs(a.length - b.length) > 1) return false;
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return a.slice(i + 1) === b.slice(i + 1) || a.slice(i + 1) === b.slice(i) || a.slice(i) === b.slice(i + 1);
}
