// Which addresses an authenticated user may send as: the envelope sender at MAIL FROM and the
// From: header at end of DATA. `[smtp.senders] alice = ["alice@example.net", "*@alice.example"]`;
// without an entry, user@ each local domain.

import type { Config } from '../config/schema.js';
import { parseAddressList } from '../message/address-list.js';
import { isContinuation, isFieldStart } from '../message/headers.js';

/** The patterns a user owns (lower case). */
export function sendersOf(user: string, config: Config): string[] {
  return config.smtp.senders[user] ?? config.local.domains.map((d) => `${user.toLowerCase()}@${d}`);
}

/** `*` matches any run of characters within the pattern ("*@example.net"); else exact match. */
export function ownsAddress(patterns: readonly string[], address: string): boolean {
  const a = address.toLowerCase();
  return patterns.some((p) => {
    if (!p.includes('*')) return p === a;
    const re = new RegExp('^' + p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*') + '$');
    return re.test(a);
  });
}

/** Addresses in the From: fields of a header section (CRLF or LF lines); null when unparsable. */
export function fromAddresses(header: string): string[] | null {
  const out: string[] = [];
  let current: string | null = null;
  const flush = () => {
    if (current === null) return;
    for (const a of parseAddressList(current)) {
      if (!a) return void out.push('');
      out.push(a.address);
    }
    current = null;
  };
  for (const line of header.split(/\r?\n/)) {
    if (line === '') break;
    if (current !== null && isContinuation(line)) {
      current += ' ' + line.trim();
      continue;
    }
    flush();
    if (isFieldStart(line) && /^from:/i.test(line)) current = line.slice(5).trim();
  }
  flush();
  return out.includes('') ? null : out;
}
