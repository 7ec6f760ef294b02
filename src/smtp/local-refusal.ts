// What an SMTP client is told when a local recipient is refused while it waits: at RCPT (the
// address cannot be expanded: an alias loop, members that are nobody, an unreadable ~/.forward
// or aliases file) and at the end of DATA (pre-queue delivery failed for good for every
// recipient: runner.ts deliverNow). The client may be a stranger, so it reads what a DSN or
// `tidemail log` shows a sender — the status and a fixed text, by sender-view.ts's rule — never
// the reason: a .forward's command and output, paths and errno, an MDA's words, alias members.
// The reason is the postmaster's (the log; root's `tidemail log`). The same for every client,
// local or authenticated too: docs/DESIGN-NOTES.md "In-session refusals of a local recipient".

import { SmtpError } from '../errors.js';
import { resultForSender } from '../queue/sender-view.js';

/**
 * The reply for a local recipient's `result` (a delivery result or a lookup error, led by its
 * status). `temporary`: the client is to try again (4xx). `rcpt` leads the text, as in every
 * RCPT refusal, unless the kept text already names the address.
 */
export function localRefusal(result: string, temporary: boolean, rcpt?: string): SmtpError {
  const text = resultForSender('local', temporary ? 'deferred' : 'bounced', result);
  const m = /^(?:([245]\d\d) )?([245]\.\d{1,3}\.\d{1,3}) (.*)$/.exec(text);
  const enhanced = m?.[2] ?? (temporary ? '4.0.0' : '5.0.0');
  // A reply code of the enhanced code's class (a result may carry only the enhanced code).
  const code = Number(m?.[1] ?? (enhanced.startsWith('4') ? 451 : 550));
  const rest = m?.[3] ?? text;
  return new SmtpError(code, enhanced, rcpt && !rest.startsWith('<') ? `<${rcpt}>: ${rest}` : rest);
}
