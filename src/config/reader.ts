// Typed access to a parsed TOML document with errors that name file:line:column, the key, what
// was expected, and a fix with an example. smol-toml reports syntax errors with a position; for
// semantic errors (wrong type, unknown key) we find the key by scanning the source, which is
// enough for hand-written files.

import { ConfigError } from '../errors.js';
import { parseDuration, parseSize } from './units.js';

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

/** Reads one table of a config file; `path` is where the table sits in the file. */
export class ConfigReader {
  private readonly seen = new Set<string>();
  constructor(
    readonly file: string,
    readonly source: string,
    readonly table: TomlTable,
    readonly path: readonly string[] = [],
  ) {}

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
    return this.table[key];
  }

  string(key: string, dflt: string): string;
  string(key: string): string | undefined;
  string(key: string, dflt?: string): string | undefined {
    const v = this.raw(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${describe(v)}`, `write it in quotes, e.g. ${key} = "value"`);
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
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') this.fail(key, `must be true or false, got ${describe(v)}`, `write ${key} = true or ${key} = false (no quotes)`);
    return v;
  }

  integer(key: string, dflt: number, min = 0): number {
    const v = this.raw(key);
    if (v === undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
      this.fail(key, `must be a whole number ≥ ${min}, got ${describe(v)}`, `write e.g. ${key} = ${Math.max(min, dflt)}`);
    }
    return v;
  }

  duration(key: string, dflt: number): number {
    const v = this.raw(key);
    if (v === undefined) return dflt;
    const ms = parseDuration(v);
    if (ms === null) this.fail(key, `is not a duration: ${describe(v)}`, `write e.g. ${key} = "30s", "5m", "4h" or "5d"`);
    return ms;
  }

  size(key: string, dflt: number): number {
    const v = this.raw(key);
    if (v === undefined) return dflt;
    const n = parseSize(v);
    if (n === null) this.fail(key, `is not a size: ${describe(v)}`, `write e.g. ${key} = "25M" (K, M and G are powers of 1024)`);
    return n;
  }

  stringList(key: string, dflt: string[]): string[] {
    const v = this.raw(key);
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
    return new ConfigReader(this.file, this.source, (v as TomlTable) ?? {}, [...this.path, key]);
  }

  /** Arrays of tables (`[[fetch]]`). */
  subList(key: string): ConfigReader[] {
    const v = this.raw(key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'object' || x === null || Array.isArray(x))) {
      this.fail(key, `must be a list of tables`, `write each entry as [[${key}]]`);
    }
    return (v as TomlTable[]).map((t, i) => new ConfigReader(this.file, this.source, t, [...this.path, `${key}#${i}`]));
  }

  /** Call after reading every known key: anything left is a typo or an unsupported option. */
  rejectUnknown(known: readonly string[] = []): void {
    for (const key of Object.keys(this.table)) {
      if (this.seen.has(key) || known.includes(key)) continue;
      const all = [...this.seen, ...known];
      const guess = all.find((k) => closeTo(k, key));
      this.fail(key, `is not a known setting`, guess ? `did you mean '${guess}'?` : `remove it (known here: ${all.sort().join(', ') || 'none'})`);
    }
  }
}

function describe(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v !== null && typeof v === 'object') return 'a table';
  return JSON.stringify(v);
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
