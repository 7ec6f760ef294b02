// What a peer's names may contain: the HELO/EHLO argument and the addresses of MAIL and RCPT.
// With SMTPUTF8 (RFC 6531/6532) an address may be non-ASCII, and a U-label domain (RFC 5890) is
// letters, marks and digits; but controls (C0, C1), format characters (Cf: bidi overrides and
// marks U+202A-202E, U+2066-2069, U+200E/F, U+061C, the soft hyphen U+00AD, zero-width U+200B,
// U+2060, U+FEFF, tags) and line/paragraph separators are never part of a name. They only hide or
// reorder what a reader sees ("Trojan Source"), and they would reach the Received header and logs.
// Nor are the other default-ignorable code points, which render as nothing though some are
// letters or marks (U+3164 HANGUL FILLER, U+115F, U+FFA0, U+034F COMBINING GRAPHEME JOINER,
// variation selectors, the unassigned U+2065), or U+2800 BRAILLE PATTERN BLANK, a blank symbol.

// ZWNJ/ZWJ (U+200C/D) are Cf too, but IDNA2008 allows them in context (RFC 5892 CONTEXTJ: Persian,
// Indic scripts): kept after a non-ASCII letter or mark, refused next to ASCII ("pay\u200dpal").
const INVISIBLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\u2800]/u;
const INVISIBLE_ALL = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Default_Ignorable_Code_Point}\u2800]/gu;
const JOINER_CONTEXT = /[^\p{ASCII}]/u;

/** True when `text` holds a control, format or separator character a name must not carry. */
export function hasInvisible(text: string): boolean {
  return invisibleAt(text) >= 0;
}

/** Where in `text` the first character hasInvisible refuses is (a UTF-16 index), -1 when none: one scan. */
export function invisibleAt(text: string): number {
  if (!INVISIBLE.test(text)) return -1;
  for (const m of text.matchAll(INVISIBLE_ALL)) {
    const c = m[0];
    if (c !== '\u200c' && c !== '\u200d') return m.index;
    const before = text[m.index - 1];
    if (!before || !JOINER_CONTEXT.test(before) || INVISIBLE.test(before)) return m.index;
  }
  return -1;
}

// A label: ASCII letters, digits, '-' and '_' (Windows machines send "DESKTOP-4711", "my_host";
// Postfix accepts both), or a U-label's letters, marks and digits.
const LABEL = /^[\p{L}\p{M}\p{N}_-]{1,63}$/u;
const ADDRESS_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]+\]$/; // RFC 5321 §4.1.3: dcontent, no [ ] \

/**
 * HELO/EHLO: a domain (A-labels or U-labels; a trailing dot is tolerated) or an address literal
 * (RFC 5321 §4.1.1.1). Bare IPv4 addresses pass as labels of digits, as many clients send them.
 */
export function isHeloName(host: string): boolean {
  if (hasInvisible(host)) return false;
  if (host.startsWith('[')) return ADDRESS_LITERAL.test(host);
  const name = host.endsWith('.') ? host.slice(0, -1) : host;
  if (!name || name.length > 253) return false;
  return name.split('.').every((l) => LABEL.test(l));
}
