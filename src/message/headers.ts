// A message's header section as a list of fields, kept byte-for-byte (folded lines included)
// so fields we do not touch are written back exactly as they came.

import { parseAddressList } from './address-list.js';

export interface HeaderField {
  /** Lower-cased field name. */
  name: string;
  /** The raw lines of the field without line endings, continuation lines included. */
  lines: string[];
}

export function isFieldStart(line: string): boolean {
  return /^[!-9;-~]+:/.test(line);
}

export function isContinuation(line: string): boolean {
  return line.startsWith(' ') || line.startsWith('\t');
}

export function fieldValue(f: HeaderField): string {
  const first = f.lines[0]!;
  return [first.slice(first.indexOf(':') + 1), ...f.lines.slice(1)].join(' ').trim();
}

export function hasField(fields: readonly HeaderField[], name: string): boolean {
  return fields.some((f) => f.name === name);
}

/** Addresses in address-list fields (groups flattened; "To: root" is the local part root). */
export function addressesIn(fields: readonly HeaderField[], names: readonly string[]): string[] {
  const out: string[] = [];
  for (const f of fields) {
    if (!names.includes(f.name)) continue;
    for (const a of parseAddressList(fieldValue(f))) if (a) out.push(a.address);
  }
  return out;
}

export function serializeFields(fields: readonly HeaderField[]): string {
  return fields.map((f) => f.lines.join('\r\n') + '\r\n').join('');
}

/**
 * Splits a raw header section (CRLF or LF line ends) into fields with their name as written and
 * the value unfolded (RFC 5322 §2.2.3: CRLF before WSP removed), leading whitespace trimmed.
 * Lines that are neither a field nor a continuation are skipped (they are not headers).
 */
export function parseHeaderSection(section: string): { name: string; value: string }[] {
  const out: { name: string; value: string }[] = [];
  for (const line of section.split(/\r?\n/)) {
    if (line === '') break;
    if (isContinuation(line) && out.length) {
      out[out.length - 1]!.value += line;
    } else if (isFieldStart(line)) {
      const colon = line.indexOf(':');
      out.push({ name: line.slice(0, colon), value: line.slice(colon + 1).replace(/^[ \t]+/, '') });
    }
  }
  return out;
}
