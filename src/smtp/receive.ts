// SMTP's side of the intake (src/intake/pipeline.ts): the trace line an SMTP hop adds, and the
// target type SmtpFront is built with. Spooling, checks, signing and the commit are the pipeline's.

import type { IntakeTarget } from '../intake/pipeline.js';
import { rfc5322Date } from '../message/date.js';

export { headerLines, type ReceiveLimits, type SpooledMessage } from '../intake/pipeline.js';

/** Where accepted messages go: the queue in the daemon, the maildrop in `sendmail -bs`. */
export type MessageSink = IntakeTarget;

export interface TraceInfo {
  helo: string;
  clientAddress: string;
  clientHostname?: string;
  protocol: string; // ESMTP, ESMTPS, SMTP, LMTP (RFC 3848)
  hostname: string;
  recipients: string[];
}

/** The Received: trace header we prepend (RFC 5321 §4.4). */
export function receivedHeader(t: TraceInfo, msgid: string): string {
  const from = t.clientHostname && t.clientHostname !== `[${t.clientAddress}]` ? `${t.clientHostname} ` : '';
  const forPart = t.recipients.length === 1 ? `\r\n\tfor <${t.recipients[0]}>` : '';
  return `Received: from ${t.helo || 'unknown'} (${from}[${t.clientAddress}])\r\n` +
    `\tby ${t.hostname} (tidemail) with ${t.protocol} id ${msgid}${forPart};\r\n\t${rfc5322Date()}\r\n`;
}
