// Reply texts, one place. Every refusal carries a basic and an enhanced code (RFC 3463);
// the enhanced code leads the text and the engine passes it through (wire/reply-writer.ts).

import { SmtpError } from '../errors.js';
import { localRefusal } from './local-refusal.js';

export const replies = {
  queued: (id: string) => `2.0.0 Ok: queued as ${id}`,
  relayDenied: (rcpt: string) => new SmtpError(554, '5.7.1', `<${rcpt}>: Relay access denied`),
  badRecipient: (rcpt: string) => new SmtpError(501, '5.1.3', `<${rcpt}>: Bad recipient address syntax`),
  badSender: (sender: string) => new SmtpError(501, '5.1.7', `<${sender}>: Bad sender address syntax`),
  // Postfix answers 553 for an address it will not take as given (RFC 5321 4.2.2: mailbox name not allowed).
  notMailbox: (rcpt: string, why: string) => new SmtpError(553, '5.1.3', `<${rcpt}>: Recipient address rejected: not a mailbox address (${why})`),
  notMailboxSender: (sender: string, why: string) => new SmtpError(553, '5.1.7', `<${sender}>: Sender address rejected: not a mailbox address (${why})`),
  tooManyRecipients: (max: number) => new SmtpError(452, '4.5.3', `Too many recipients (at most ${max} per message)`),
  bareLf: () => new SmtpError(554, '5.6.0', 'Message refused: bare LF in message data; lines must end with CRLF (RFC 5321 2.3.8)'),
  bareCr: () => new SmtpError(554, '5.6.0', 'Message refused: bare CR in message data; lines must end with CRLF (RFC 5321 2.3.8)'),
  nul: () => new SmtpError(554, '5.6.0', 'Message refused: NUL byte in message data'),
  lineTooLong: (max: number) => new SmtpError(554, '5.6.0', `Message refused: a line is longer than ${max} characters (RFC 5322 2.1.1); use a transfer encoding such as quoted-printable`),
  tooBig: (max: number) => new SmtpError(552, '5.3.4', `Message size exceeds fixed limit of ${max} bytes`),
  diskFull: () => new SmtpError(452, '4.3.1', 'Insufficient system storage, try again later'),
  /** At MAIL FROM, below [queue] queue_minfree (src/queue/free-space.ts): before any data is sent. */
  noRoom: (size: number) => new SmtpError(452, '4.3.1', size
    ? `Insufficient system storage for a message of ${size} bytes now, try again later`
    : 'Insufficient system storage: the mail queue is nearly full, try again later'),
  localError: () => new SmtpError(451, '4.3.0', 'Local error in processing, try again later'),
  noRecipients: () => new SmtpError(554, '5.5.1', 'No valid recipients'),
  unknownUser: (rcpt: string) => new SmtpError(550, '5.1.1', `<${rcpt}>: Recipient address rejected: User unknown in local recipient table`),
  lookupFailed: (rcpt: string, why: string) => new SmtpError(451, '4.3.0', `<${rcpt}>: Temporary lookup failure: ${why}`),
  authRequired: () => new SmtpError(530, '5.7.0', 'Authentication required'),
  encryptionRequired: () => new SmtpError(538, '5.7.11', 'Encryption required for requested authentication mechanism'),
  authFailed: () => new SmtpError(535, '5.7.8', 'Authentication credentials invalid'),
  authUnavailable: () => new SmtpError(454, '4.7.0', 'Temporary authentication failure'),
  senderNotOwned: (sender: string, user: string) => new SmtpError(553, '5.7.1', `<${sender}>: Sender address rejected: not owned by user ${user}`),
  fromNotOwned: (from: string, user: string) => new SmtpError(553, '5.7.1', `Message refused: From: header address <${from}> not owned by user ${user}`),
  fromUnparsable: (user: string) => new SmtpError(550, '5.7.1', `Message refused: From: header cannot be read, so it cannot be checked against the addresses of user ${user}`),
  /** Pre-queue delivery failed for good for every recipient (all local): said as local-refusal.ts says it. */
  deliveryFailed: (result: string) => localRefusal(result, false),
};
