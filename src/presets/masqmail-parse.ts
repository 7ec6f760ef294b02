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
  converted: { at: string; key: string; to: string }[];
  notConverted: { at: string; key: string; value: string; reason: string }[];
  notes: string[];
}

export interface ImportResult {
  files: PlannedFile[];
  report: ImportReport;
}

/** Parses masqmail's `key = value` format: "quoted" values may span lines and escape \" ; # starts a comment line. */
export function parseMasqFile(file: string): MasqEntry[] {
  const text = fs.readFileSync(file, 'utf8');
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
    if (eq < 0 || eq > eol) throw new Error(`${file}:${startLine}: expected "key = value", found "${text.slice(i, eol).trim()}"`);
    const key = text.slice(i, eq).trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(key)) throw new Error(`${file}:${startLine}: "${key}" is not a masqmail setting name`);
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
        for (const l of fs.readFileSync(item, 'utf8').split('\n')) if (l.trim() && !l.trim().startsWith('#')) out.push(l.trim());
      } catch (err) {
        problems.push(`${at(e)} ${e.key}: cannot read the included file ${item} (${(err as NodeJS.ErrnoException).code})`);
      }
      continue;
    }
    out.push(item);
  }
  return out;
}

export const bool = (v: string) => /^(on|yes|true)$/i.test(v.trim());

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
  /** Comments for not-converted keys, per output file. */
  leftovers: Map<string, string[]>;
}

export function converted(acc: Accounting, e: MasqEntry, to: string): void {
  acc.report.converted.push({ at: at(e), key: e.key, to });
}

export function notConverted(acc: Accounting, e: MasqEntry, reason: string, target: string): void {
  acc.report.notConverted.push({ at: at(e), key: e.key, value: e.value, reason });
  const list = acc.leftovers.get(target) ?? [];
  list.push(`masqmail ${at(e)}: ${e.key} = ${JSON.stringify(e.value)} — not converted: ${reason}`);
  acc.leftovers.set(target, list);
}
