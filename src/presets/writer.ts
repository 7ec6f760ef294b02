// Writing a generated configuration: a small TOML emitter that keeps comments (the files are
// read and edited by people afterwards), and the file operations of `setup` and
// `import-masqmail` — never overwrite without --force, secrets 0600 (the switch and the backup
// are in switch.ts).

import fs from 'node:fs';
import path from 'node:path';
import { writeSecretFile } from '../config/secret-file.js';

export type TomlValue = string | number | boolean | string[] | Record<string, string>;

const BARE_KEY = /^[A-Za-z0-9_-]+$/;

export function tomlKey(key: string | string[]): string {
  const parts = Array.isArray(key) ? key : [key];
  return parts.map((p) => (BARE_KEY.test(p) ? p : JSON.stringify(p))).join('.');
}

/** TOML basic strings accept JSON's escapes (\" \\ \n \t \uXXXX), so JSON.stringify is exact. */
export function tomlValue(v: TomlValue): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (Array.isArray(v)) return `[${v.map((x) => JSON.stringify(x)).join(', ')}]`;
  return `{ ${Object.entries(v).map(([k, x]) => `${tomlKey(k)} = ${JSON.stringify(x)}`).join(', ')} }`;
}

/** A TOML file built line by line, with comments where a person needs them. */
export class TomlText {
  private readonly lines: string[] = [];

  comment(text: string): this {
    for (const l of text.split('\n')) this.lines.push(l ? `# ${l}` : '#');
    return this;
  }

  blank(): this {
    if (this.lines.length && this.lines[this.lines.length - 1] !== '') this.lines.push('');
    return this;
  }

  set(key: string | string[], value: TomlValue, comment?: string): this {
    const line = `${tomlKey(key)} = ${tomlValue(value)}`;
    this.lines.push(comment ? `${line}   # ${comment}` : line);
    return this;
  }

  /** A commented-out setting: shown as an example, not in force. */
  example(key: string | string[], value: TomlValue, comment?: string): this {
    const line = `# ${tomlKey(key)} = ${tomlValue(value)}`;
    this.lines.push(comment ? `${line}   # ${comment}` : line);
    return this;
  }

  table(name: string): this {
    this.blank();
    this.lines.push(`[${name}]`);
    return this;
  }

  arrayTable(name: string): this {
    this.blank();
    this.lines.push(`[[${name}]]`);
    return this;
  }

  toString(): string {
    return this.lines.join('\n').replace(/\n+$/, '') + '\n';
  }
}

/** One file a setup writes; `secret` files get mode 0600 and the daemon user as owner. */
export interface PlannedFile {
  path: string;
  content: string;
  secret?: boolean;
}

export interface Owner {
  uid: number;
  gid: number;
}

/** "20261125-212501": sorts by time, safe in a file name. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

/** Writes the files: directories 0755, ordinary files 0644 via a temp file and rename, secrets 0600. */
export function writePlannedFiles(files: PlannedFile[], owner: Owner | null): void {
  for (const f of files) {
    fs.mkdirSync(path.dirname(f.path), { recursive: true, mode: 0o755 });
    if (f.secret) {
      writeSecretFile(f.path, f.content, owner ?? undefined);
      continue;
    }
    const tmp = `${f.path}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, f.content, { mode: 0o644 });
    fs.chmodSync(tmp, 0o644);
    fs.renameSync(tmp, f.path);
  }
}

/** A directory only the daemon's user may read (secrets): 0750 root:its group as root, else 0700. */
export function makePrivateDir(dir: string, owner: Owner | null): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (owner && process.getuid?.() === 0) {
    fs.chownSync(dir, 0, owner.gid);
    fs.chmodSync(dir, 0o750);
  } else {
    fs.chmodSync(dir, 0o700);
  }
}
