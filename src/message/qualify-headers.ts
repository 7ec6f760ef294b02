// Local programs write "From: root (Cron Daemon)" or "To: bob": addresses without a domain,
// which no receiver can answer and no DKIM key can sign for. Like Postfix's append_at_myorigin
// for local submissions, such addresses get our host name; every other field, and every field
// we cannot parse, stays byte for byte as it came.

import { parseAddressList } from './address-list.js';
import { isContinuation } from './headers.js';
import { quotePhrase } from './submission.js';

/** The address fields whose bare local parts are qualified (RFC 5322 §3.6.2, §3.6.3, §3.6.6). */
const ADDRESS_FIELDS = new Set(['from', 'sender', 'reply-to', 'to', 'cc', 'resent-from', 'resent-sender', 'resent-to', 'resent-cc']);

/**
 * Qualifies bare local parts in the address fields of a raw header section (CRLF line ends,
 * latin1 text so 8-bit bytes survive).
 */
export function qualifyHeaderSection(section: string, hostname: string): string {
  const lines = section.split('\r\n');
  const out: string[] = [];
  for (let i = 0; i < lines.length;) {
    const field = [lines[i]!];
    for (i++; i < lines.length && lines[i] !== '' && isContinuation(lines[i]!); i++) field.push(lines[i]!);
    out.push(...qualifyField(field, hostname));
  }
  return out.join('\r\n');
}

function qualifyField(field: string[], hostname: string): string[] {
  const first = field[0]!;
  const colon = first.indexOf(':');
  if (colon <= 0 || !ADDRESS_FIELDS.has(first.slice(0, colon).trim().toLowerCase())) return field;
  const value = [first.slice(colon + 1), ...field.slice(1)].join('\r\n');
  const text = Buffer.from(value, 'latin1').toString('utf8');
  // Groups ("undisclosed-recipients:;") and anything addressparser cannot read: left alone.
  if (/:/.test(text.replace(/"(?:[^"\\]|\\.)*"/g, '').replace(/\((?:[^()\\]|\\.)*\)/g, ''))) return field;
  const list = parseAddressList(text.replace(/\r\n/g, ''));
  if (!list.length || list.some((a) => a === null) || list.every((a) => a!.address.includes('@'))) return field;
  const rendered = list.map((a) => {
    const address = a!.address.includes('@') ? a!.address : `${a!.address}@${hostname}`;
    return a!.name ? `${quotePhrase(a!.name)} <${address}>` : address;
  }).join(', ');
  return [`${first.slice(0, colon)}: ${Buffer.from(rendered, 'utf8').toString('latin1')}`];
}
