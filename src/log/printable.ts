// Text that came from outside (a remote server's reply, a header, a sender address) is shown on
// terminals and written to logs. Raw control characters there let a hostile peer clear the
// screen, retitle the window, fake log lines or hide text (ESC [2J, ESC ]0;…BEL, CR, bidi
// overrides). Every printer passes such text through one of these, so a control character is
// always seen as a visible escape and never acted on.

// C0 except tab (newline included: one printed record must stay one line), DEL, C1, and every
// Unicode format character (Cf) and line/paragraph separator: the bidi embeddings, overrides,
// isolates and marks ("Trojan Source": U+202A-202E, U+2066-2069, U+200E/F, U+061C) that reorder
// what is shown, and the invisible ones (U+00AD soft hyphen, U+200B-200D, U+2060, U+FEFF, tags).
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}]/gu;
const CONTROL_EXCEPT_NEWLINE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}]/gu;
// Most text has none of them: a test without /g is cheaper than a replace that finds nothing.
const ANY_CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}]/u;

function escape(c: string): string {
  const n = c.codePointAt(0)!;
  if (n <= 0xff) return `\\x${n.toString(16).padStart(2, '0')}`;
  return n <= 0xffff ? `\\u${n.toString(16).padStart(4, '0')}` : `\\u{${n.toString(16)}}`;
}

/** One value, on one line: every control character (but tab) as `\xNN`. */
export function printable(text: string): string {
  return ANY_CONTROL.test(text) ? text.replace(CONTROL, escape) : text;
}

/** Multi-line output we built ourselves: the line breaks stay, every other control is escaped. */
export function printableLines(text: string): string {
  return text.replace(CONTROL_EXCEPT_NEWLINE, escape);
}

// What JSON.stringify leaves raw: DEL, C1, format characters and separators (as above).
const JSON_RAW = /[\x7f-\x9f\p{Cf}\p{Zl}\p{Zp}]/gu;

/** JSON.stringify that also escapes DEL, C1 and format characters (as \uNNNN, so it still parses). */
export function printableJson(value: unknown, space?: number): string {
  // Astral ones (tags U+E0001…) as their surrogate pair, which JSON reads back as the same text.
  const hex = (u: number) => `\\u${u.toString(16).padStart(4, '0')}`;
  return JSON.stringify(value, null, space).replace(JSON_RAW, (c) => [...Array(c.length).keys()].map((i) => hex(c.charCodeAt(i))).join(''));
}
