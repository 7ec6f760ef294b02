// Envelope address helpers.

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
 * A conservative syntax check for envelope addresses we accept into the queue: no spaces or
 * control characters, no angle brackets, at most one unquoted @, domain made of labels
 * (or an address literal). SMTPUTF8 addresses (non-ASCII) are allowed.
 */
export function isValidEnvelopeAddress(address: string): boolean {
  if (address.length > 320 || /[\s<>()\\,;\x00-\x1f\x7f]/.test(address)) return false;
  const at = address.lastIndexOf('@');
  if (at <= 0) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  if (!local.startsWith('"') && (local.length > 64 || local.includes('@'))) return false;
  if (/^\[[0-9a-fA-F:.]+\]$|^\[IPv6:[0-9a-fA-F:.]+\]$/.test(domain)) return true;
  return /^[^.@\[\]]+(\.[^.@\[\]]+)*$/.test(domain) && !domain.includes('..');
}
