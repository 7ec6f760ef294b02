// Text that came from outside (a remote server's reply, a header, a sender address) is shown on
// terminals and written to logs. Raw control characters there let a hostile peer clear the
// screen, retitle the window, fake log lines or hide text (ESC [2J, ESC ]0;…BEL, CR, bidi
// overrides). Every printer passes such text through one of these, so a control character is
// always seen as a visible escape and never acted on.

// C0 except tab (newline included: one printed record must stay one line), DEL, C1, and the
// Unicode bidi embeddings/overrides/isolates ("Trojan Source") that reorder what is shown.
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;
const CONTROL_EXCEPT_NEWLINE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

function escape(c: string): string {
  const n = c.charCodeAt(0);
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
}

/** One value, on one line: every control character (but tab) as `\xNN`. */
export function printable(text: string): string {
  return text.replace(CONTROL, escape);
}

/** Multi-line output we built ourselves: the line breaks stay, every other control is escaped. */
export function printableLines(text: string): string {
  return text.replace(CONTROL_EXCEPT_NEWLINE, escape);
}

// What JSON.stringify leaves raw: DEL, C1 and the bidi controls.
const JSON_RAW = /[\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

/** JSON.stringify that also escapes DEL, C1 and bidi controls (as \uNNNN, so it still parses). */
export function printableJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(JSON_RAW, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
