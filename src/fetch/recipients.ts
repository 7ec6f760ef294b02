// Who a fetched message is for. A single-user mailbox: `deliver_to`. A multidrop mailbox (one
// POP3 box collecting the mail of a whole domain) loses the SMTP envelope, so the recipients are
// read back from the headers the provider's MTA added:
//
//   recipients_from = ["Delivered-To", "X-Original-To"]   # header names, tried in this order
//   recipients_domains = ["example.org"]                   # only addresses in these domains
//
// The first listed header that yields at least one address in recipients_domains wins (all its
// occurrences count); each address becomes the local user named by its local part
// (bob@example.org → bob, then aliases apply). Nothing found → deliver_to. Addresses in other
// domains are never used: a header can name anyone, and taking it would relay mail on a
// stranger's say-so. "To"/"Cc" work too, but miss Bcc recipients and list mail; prefer an
// envelope header when the provider adds one.

import type { FetchAccount } from './account.js';
import { nonMailboxReason } from '../message/address.js';

/** Enough for any real header section; past it the headers are not scanned further. */
export const HEADER_SCAN_LIMIT = 128 * 1024;
/** One message fans out to at most this many local recipients. */
const MAX_RECIPIENTS = 100;

export interface FetchEnvelope {
  /** Local users or addresses, as deliver_to would name them. */
  recipients: string[];
  /** The header the recipients came from; undefined when deliver_to applied. */
  from?: string;
}

/** Header section lines (without line ends, up to the blank line) → the message's envelope. */
export function envelopeFor(acct: Pick<FetchAccount, 'deliverTo' | 'recipientsFrom' | 'recipientsDomains'>, headerLines: readonly Buffer[]): FetchEnvelope {
  if (!acct.recipientsFrom.length) return { recipients: acct.deliverTo };
  const fields = unfold(headerLines);
  const domains = new Set(acct.recipientsDomains.map((d) => d.toLowerCase()));
  for (const name of acct.recipientsFrom) {
    const want = name.toLowerCase() + ':';
    const found = new Map<string, string>();
    for (const f of fields) {
      if (!f.toLowerCase().startsWith(want)) continue;
      for (const addr of addresses(f.slice(want.length))) {
        const at = addr.lastIndexOf('@');
        const local = addr.slice(0, at);
        // A header can say "/path@our.domain": that is nobody's mailbox, never a file.
        if (nonMailboxReason(addr)) continue;
        if (domains.has(addr.slice(at + 1).toLowerCase()) && local && !found.has(local.toLowerCase()) && found.size < MAX_RECIPIENTS) found.set(local.toLowerCase(), local);
      }
    }
    if (found.size) return { recipients: [...found.values()], from: name };
  }
  return { recipients: acct.deliverTo };
}

/** RFC 5322 2.2.3: one string per header field, continuation lines joined. */
function unfold(lines: readonly Buffer[]): string[] {
  const out: string[] = [];
  for (const l of lines) {
    const s = l.toString('utf8');
    if (s === '') break;
    if (/^[ \t]/.test(s) && out.length) out[out.length - 1] += ' ' + s.trim();
    else out.push(s);
  }
  return out;
}

/**
 * The addr-specs in a header value: display names (quoted strings) and comments are dropped
 * first, as they may contain "@"; then every local@domain token counts.
 */
export function addresses(value: string): string[] {
  const bare = value.replace(/"(?:[^"\\]|\\.)*"/g, ' ').replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  return [...bare.matchAll(/([^\s<>(),;:"@[\]\\]+)@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)/g)].map((m) => `${m[1]}@${m[2]}`);
}
