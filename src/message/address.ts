// Envelope address helpers.

// The same rule as SMTP's MAIL/RCPT (smtp/wire/peer-text.ts, which imports nothing): sendmail's
// -f, argv and -t addresses and hand-written maildrop files must not get around it.
import { hasInvisible, invisibleAt } from '../smtp/wire/peer-text.js';

/** The domain of an address, lower-cased; '' for a bare local part or the null sender. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

export function localPartOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : address.slice(0, at);
}

/** "root" → "root@host": bare local parts belong to this machine, as sendmail does. */
export function qualify(address: string, hostname: string): string {
  if (!address || address.includes('@')) return address;
  return `${address}@${hostname}`;
}

/**
 * Why an address is not a mailbox even if its syntax passes: its local part (quotes and
 * backslashes removed) starts like a target of the aliases file — "/file", "|command",
 * "\\user", ":include:" (local/aliases.ts). Those targets may only come from our own aliases
 * and .forward files, never from an envelope, where they would let a sender name a path.
 * @returns the reason, or null for an address that may be a mailbox.
 */
export function nonMailboxReason(address: string): string | null {
  const local = localPartOf(address).replace(/^"(.*)"$/s, '$1').replace(/\\(.)/gs, '$1');
  if (local.startsWith('/')) return 'a local part starting with "/" would name a file';
  if (local.startsWith('|')) return 'a local part starting with "|" would name a command';
  if (local.startsWith('\\')) return 'a local part starting with "\\" is an aliases-file form';
  if (/^:include:/i.test(local)) return 'a local part starting with ":include:" is an aliases-file form';
  return null;
}

/** Why an address must not be used although it may look right: an invisible character in it; null when none. */
export function invisibleReason(text: string): string | null {
  // The first offender, found in the one scan that judges it (not by re-testing prefixes: that was
  // quadratic, minutes for a 1 MB -F name).
  const at = invisibleAt(text);
  if (at < 0) return null;
  const c = text.codePointAt(at)!;
  return `it contains an invisible or control character (U+${c.toString(16).toUpperCase().padStart(4, '0')})`;
}

/**
 * A conservative syntax check for envelope addresses we accept into the queue: no spaces,
 * controls or invisible format characters (invisibleReason), no angle brackets, at most one
 * unquoted @, domain made of labels (or an address literal), and a mailbox (nonMailboxReason).
 * SMTPUTF8 addresses (non-ASCII) are allowed.
 */
export function isValidEnvelopeAddress(address: string): boolean {
  if (nonMailboxReason(address) !== null) return false;
  if (address.length > 320 || /[\s<>()\\,;\x00-\x1f\x7f]/.test(address) || hasInvisible(address)) return false;
  const at = address.lastIndexOf('@');
  if (at <= 0) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (!local.startsWith('"') && (local.length > 64 || local.includes('@'))) return false;
  if (/^\[[0-9a-fA-F:.]+\]$|^\[IPv6:[0-9a-fA-F:.]+\]$/.test(domain)) return true;
  return /^[^.@\[\]]+(\.[^.@\[\]]+)*$/.test(domain) && !domain.includes('..');
}
