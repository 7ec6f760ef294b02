// A server's reply to a login becomes text that every local user may read: a route's or a mail's
// last error (mailq, `tidemail status`), a POP3 account's failure, the daemon log. A hostile or
// broken server may echo what it got — AUTH PLAIN's blob and LOGIN's base64 password decode to
// the password, USER/PASS sends it as it is — so such a reply is redacted before it is kept.

export const REDACTED = '[redacted]';

// Base64 of 12 bytes or more, as a word of its own. A long all-lowercase word, a long number or
// words run together in CamelCase is text, not an encoding ("internationalization", Microsoft
// 365's "SmtpClientAuthentication is disabled", "UnknownUserOrBadPassword"): the hint the admin
// needs. Any other such token in a login failure's reply is taken out, as it may be what we sent
// (what we did send is replaced whatever it looks like).
const BASE64_TOKEN = /(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])/g;
const PLAIN_WORD = /^(?:[a-z]+|[0-9]+|[A-Z]?[a-z]+(?:[A-Z][a-z]+)+)$/;

/** Below this length a secret is replaced only as a word of its own: a password "p" must not eat every p of the reply. */
const SHORT_SECRET = 6;

/** `text` with every occurrence of what we sent (`sent`: the secret in each form it took) replaced by "[redacted]". */
export function redactSecrets(text: string, sent: readonly string[]): string {
  let out = text;
  for (const s of [...new Set(sent.flatMap(spellings))].filter((x) => x.length > 0).sort((a, b) => b.length - a.length)) {
    if (s.length >= SHORT_SECRET) out = out.split(s).join(REDACTED);
    else out = out.replace(new RegExp(`(?<![\\p{L}\\p{N}])${s.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&')}(?![\\p{L}\\p{N}])`, 'gu'), REDACTED);
  }
  return out;
}

/**
 * The ways a server may quote a secret it got: as sent, URL-encoded (a token endpoint or a web
 * front echoing the form it was posted: Google's refresh tokens start "1//"), and JSON with
 * escaped slashes (PHP's json_encode).
 */
function spellings(secret: string): string[] {
  const form = new URLSearchParams({ s: secret }).toString().slice(2);
  return [secret, encodeURIComponent(secret), form, secret.replace(/\//g, '\\/')];
}

/** A server's reply with what we sent and every base64-looking token of ≥ 16 characters replaced by "[redacted]". */
export function redactAuthReply(reply: string, sent: readonly string[]): string {
  return redactSecrets(reply, sent).replace(BASE64_TOKEN, (t) => (PLAIN_WORD.test(t) ? t : REDACTED));
}
