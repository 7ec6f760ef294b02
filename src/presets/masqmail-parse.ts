// masqmail files as key = value entries (masqmail.conf(5), .route(5), .get(5)), the value helpers
// the converter shares, and the accounting that makes sure no key is dropped silently.

import fs from 'node:fs';
import path from 'node:path';
import { parseDuration, formatDuration } from '../config/units.js';
import type { PlannedFile } from './writer.js';
/** One `key = value` of a masqmail file. */
export interface MasqEntry {
  key: string;
  value: string;
  file: string;
  line: number;
}

export interface ImportReport {
  /** "file:line: problem": any of these and nothing is written (exit 65). */
  errors: string[];
  converted: { at: string; key: string; to: string }[];
  notConverted: { at: string; key: string; value: string | null; reason: string }[];
  notes: string[];
}

export interface ImportResult {
  files: PlannedFile[];
  report: ImportReport;
}

/**
 * `import-masqmail --root DIR`: the masqmail files name paths of the system they belong to
 * ("/etc/masqmail/isp.route"); they are read from under DIR. Set for one conversion only
 * (withInputRoot).
 */
let inputRoot = '';

/** Where a path named by a masqmail file is read from (under --root DIR when given). */
export function inputPath(file: string): string {
  return inputRoot && path.isAbsolute(file) && !file.startsWith(inputRoot + '/') ? path.join(inputRoot, file) : file;
}

export function withInputRoot<T>(root: string, fn: () => T): T {
  const before = inputRoot;
  inputRoot = root === '/' ? '' : root;
  try {
    return fn();
  } finally {
    inputRoot = before;
  }
}

/** Keys whose values may be secrets: never shown or copied, whatever else happens to them. */
const SECRET_KEY = /pass|secret|token|key|auth|login|cred/i;

/** Largest masqmail file we read; masqmail's own files are a few KiB. */
const MAX_FILE = 1 << 20;

/**
 * Reads a file the masqmail config names. Checks the file before reading: a regular file, not
 * huge, no NUL bytes. `publicOnly`: list and host-name files hold no secrets, so one that others
 * may not read (like /etc/shadow) is refused rather than copied into a 0644 config.
 * Errors name the file only, never its content.
 */
export function readMasqText(given: string, publicOnly: boolean): string {
  const file = inputPath(given);
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (err) {
    throw new Error(`${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Error(`${file}: not a regular file`);
    if (st.size > MAX_FILE) throw new Error(`${file}: larger than 1 MiB; not a masqmail file`);
    if (publicOnly && !(st.mode & 0o004)) throw new Error(`${file}: not readable by everyone, so it may hold secrets; not read (copy its entries by hand)`);
    const buf = fs.readFileSync(fd);
    if (buf.includes(0)) throw new Error(`${file}: holds binary data; not a masqmail file`);
    return buf.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Parses masqmail's `key = value` format: "quoted" values may span lines and escape \" ; # starts
 * a comment line. Errors say file:line and what was expected, never the text found there: the
 * file may be one the config only points at (a route file that is really /etc/shadow).
 */
export function parseMasqFile(file: string): MasqEntry[] {
  const text = readMasqText(file, false);
  const entries: MasqEntry[] = [];
  let i = 0;
  let line = 1;
  const n = text.length;
  while (i < n) {
    // Skip blank space and comment lines.
    const c = text[i]!;
    if (c === '\n') {
      line++;
      i++;
      continue;
    }
    if (c === ' ' || c === '\t' || c === '\r') {
      i++;
      continue;
    }
    if (c === '#') {
      while (i < n && text[i] !== '\n') i++;
      continue;
    }
    const startLine = line;
    const eol = text.indexOf('\n', i) < 0 ? n : text.indexOf('\n', i);
    const eq = text.indexOf('=', i);
    if (eq < 0 || eq > eol) throw new Error(`${file}:${startLine}: expected "key = value"; this line has no "=" (is ${path.basename(file)} a masqmail file?)`);
    const key = text.slice(i, eq).trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`${file}:${startLine}: expected a masqmail setting name (letters, digits, _ . -) before "="`);
    i = eq + 1;
    while (i < n && (text[i] === ' ' || text[i] === '\t')) i++;
    let value = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= n) throw new Error(`${file}:${startLine}: the quoted value of ${key} is not closed with "`);
        const ch = text[i]!;
        if (ch === '\\' && i + 1 < n) {
          value += text[i + 1];
          if (text[i + 1] === '\n') line++;
          i += 2;
          continue;
        }
        if (ch === '"') {
          i++;
          break;
        }
        if (ch === '\n') line++;
        value += ch;
        i++;
      }
      // Anything after the closing quote on that line is ignored, as masqmail does.
      while (i < n && text[i] !== '\n') i++;
    } else {
      const end = text.indexOf('\n', i) < 0 ? n : text.indexOf('\n', i);
      value = text.slice(i, end).trim();
      i = end;
    }
    entries.push({ key, value, file, line: startLine });
  }
  return entries;
}

export const at = (e: MasqEntry) => `${path.basename(e.file)}:${e.line}`;

/** A ';' list; entries starting with '/' are files of one entry per line (where `files` is true). */
export function masqList(e: MasqEntry, files: boolean, problems: string[]): string[] {
  const out: string[] = [];
  for (const raw of e.value.split(';')) {
    const item = raw.trim();
    if (!item) continue;
    if (files && item.startsWith('/')) {
      try {
        for (const l of readMasqText(item, true).split('\n')) if (l.trim() && !l.trim().startsWith('#')) out.push(l.trim());
      } catch (err) {
        problems.push(`${e.file}:${e.line}: ${e.key}: the included file ${(err as Error).message}`);
      }
      continue;
    }
    out.push(item);
  }
  return out;
}

/**
 * A masqmail boolean, as strictly as masqmail's parse_boolean (which exits on anything else):
 * yes/on/true/1 or no/off/false/0. Anything else is an error, not a silent "false".
 */
export function flag(acc: Accounting, e: MasqEntry): boolean {
  const v = e.value.trim().toLowerCase();
  if (['yes', 'on', 'true', '1'].includes(v)) return true;
  if (['no', 'off', 'false', '0'].includes(v)) return false;
  acc.report.errors.push(`${e.file}:${e.line}: ${e.key} = ${JSON.stringify(e.value)} is not a boolean (yes/no, on/off, true/false, 1/0)`);
  return false;
}

/** masqmail's "1h" / "4d" / plain seconds, as a tidemail duration; null if not one. */
export function duration(v: string): string | null {
  const ms = parseDuration(v.trim());
  return ms === null ? null : formatDuration(ms);
}

/** The address in "John Smith <jsmith@x>" or "<jsmith@x>" or "jsmith@x". */
export function bareAddress(v: string): string {
  const m = /<([^>]*)>/.exec(v);
  return (m ? m[1]! : v).trim();
}

/** Splits a shell-ish command line into argv (quotes honoured, no expansion). */
export function splitCommand(cmd: string): string[] {
  const out: string[] = [];
  const re = /"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g;
  for (const m of cmd.matchAll(re)) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? m[3]!));
  return out;
}

/** masqmail's ${var} / $var in pipe and mda commands → tidemail's placeholders; null when one has none. */
export function mapVariables(arg: string): string | null {
  const table: Record<string, string> = { return_path: '{sender}', rcpt_local: '{user}', rcpt: '{recipients}' };
  let ok = true;
  const out = arg.replace(/\$\{(\w+)\}|\$(\w+)/g, (_m, a: string | undefined, b: string | undefined) => {
    const v = table[(a ?? b)!];
    if (!v) ok = false;
    return v ?? '';
  });
  return ok ? out : null;
}

export interface Accounting {
  report: ImportReport;
  /** The masqmail.conf the user named; values of unknown keys in other files are not shown. */
  mainFile: string;
  /** Comments for not-converted keys, per output file. */
  leftovers: Map<string, string[]>;
}

export function converted(acc: Accounting, e: MasqEntry, to: string): void {
  acc.report.converted.push({ at: at(e), key: e.key, to });
}

/**
 * A key we did not convert, reported with its value. `hide`: a key we do not know, in a file the
 * config only points at, is not ours to show, name or value — the "file" may be /etc/shadow or
 * an env file of secrets; the line number says where to look.
 */
/**
 * `unknown`: a key we do not know. Its value is never shown or copied (it may be a password
 * under a name we cannot guess); outside masqmail.conf its name is not shown either (the file
 * may be private). A secret-looking key's value is never shown, known or not.
 */
export function notConverted(acc: Accounting, e: MasqEntry, reason: string, target: string, unknown = false): void {
  const hidden = unknown && e.file !== acc.mainFile;
  const masked = unknown || SECRET_KEY.test(e.key);
  const key = hidden ? '(name and value not shown)' : masked ? `${e.key} (value not shown)` : e.key;
  const value = masked ? null : e.value;
  acc.report.notConverted.push({ at: at(e), key, value, reason });
  const list = acc.leftovers.get(target) ?? [];
  list.push(`masqmail ${at(e)}: ${key}${value === null ? '' : ` = ${JSON.stringify(value)}`} — not converted: ${reason}`);
  acc.leftovers.set(target, list);
}
