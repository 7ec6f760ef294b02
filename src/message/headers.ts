// A message's header section as a list of fields, kept byte-for-byte (folded lines included)
// so fields we do not touch are written back exactly as they came.

import addressparser from 'nodemailer/lib/addressparser/index.js';

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

/**
 * Addresses in address-list fields (groups flattened). A bare word ("To: root") is a local
 * part; addressparser reports it as a name without an address.
 */
export function addressesIn(fields: readonly HeaderField[], names: readonly string[]): string[] {
  const out: string[] = [];
  for (const f of fields) {
    if (!names.includes(f.name)) continue;
    const walk = (list: ReturnType<typeof addressparser>) => {
      for (const a of list) {
        if ('group' in a && a.group) walk(a.group);
        else if ('address' in a && a.address) out.push(a.address);
        else if (a.name && !/\s/.test(a.name)) out.push(a.name);
      }
    };
    walk(addressparser(fieldValue(f)));
  }
  return out;
}

export function serializeFields(fields: readonly HeaderField[]): string {
  return fields.map((f) => f.lines.join('\r\n') + '\r\n').join('');
}
