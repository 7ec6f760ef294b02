// Delivery status notifications (RFC 3464): a multipart/report with a human part, the
// machine-readable message/delivery-status, and the original headers (text/rfc822-headers).
// Sent from the null sender, so a bounce never bounces. The sender — maybe a stranger — reads
// what `tidemail log` would show them (sender-view.ts): a remote server's words as they are,
// of a local recipient's delivery only the status and a fixed text; the reason stays in the log.

import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { rfc5322Date } from '../message/date.js';
import { resultForSender } from './sender-view.js';

export interface DsnRecipient {
  recipient: string;
  /** 'failed' (bounce) or 'delayed' (warning). */
  action: 'failed' | 'delayed';
  /** Enhanced status, e.g. "5.1.1"; derived from the diagnostic when it carries one. */
  status: string;
  /** The delivery's own result, as logged; what of it the sender reads is decided here. */
  diagnostic: string;
  /** The route that tried ('local': the recipient's own delivery, whose words are not the sender's). */
  route: string;
  remote?: string;
  /** Set when the message expired in the queue: how long it was kept. */
  expiredAfter?: string;
}

export interface DsnInput {
  hostname: string;
  msgid: string;
  sender: string;
  arrival: number;
  recipients: DsnRecipient[];
  originalHeaders: Buffer;
  /** For 'delayed': how long we keep trying. */
  giveUpAfter?: string;
}

/** The enhanced code in a reply ("550 5.1.1 …" → "5.1.1"), or a default by class. */
export function statusOf(diagnostic: string, action: 'failed' | 'delayed'): string {
  // Where replies carry one: "550 5.1.1 …", "5.3.0 …" — not inside an address like 10.2.3.4.
  const m = /^(?:\d{3}[ -])?([245]\.\d{1,3}\.\d{1,3})(?:\s|$)/.exec(diagnostic);
  if (m) return m[1]!;
  const basic = /^([245])\d\d\b/.exec(diagnostic);
  if (basic) return `${basic[1]}.0.0`;
  return action === 'failed' ? '5.0.0' : '4.0.0';
}

const wrap = (s: string) => s.replace(/\r?\n/g, ' ').slice(0, 900);

/** The diagnostic as the sender reads it, in the human part and in Diagnostic-Code alike. */
function said(r: DsnRecipient): string {
  const text = resultForSender(r.route, r.action === 'delayed' ? 'deferred' : 'bounced', r.diagnostic);
  return wrap(r.expiredAfter ? `message expired after ${r.expiredAfter} in the queue; last error: ${text}` : text);
}

export function composeDsn(d: DsnInput): string {
  const boundary = `=_tidemail_${randomBytes(8).toString('hex')}`;
  const delayed = d.recipients.every((r) => r.action === 'delayed');
  const subject = delayed ? 'Delayed Mail (still being retried)' : 'Undelivered Mail Returned to Sender';
  const lines: string[] = [
    `From: Mail Delivery System <MAILER-DAEMON@${d.hostname}>`,
    `To: <${d.sender}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date()}`,
    `Message-ID: <${d.msgid}.dsn.${randomBytes(4).toString('hex')}@${d.hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Description: Notification',
    '',
    `This is the mail system at host ${d.hostname}.`,
    '',
    delayed
      ? `Your message could not be delivered yet. It stays in the queue and delivery will be retried${d.giveUpAfter ? ` for up to ${d.giveUpAfter} in all` : ''}; you do not need to resend it.`
      : 'Your message could not be delivered to one or more recipients. It is attached below.',
    '',
    ...d.recipients.map((r) => `<${r.recipient}>: ${said(r)}`),
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    `Reporting-MTA: dns; ${d.hostname}`,
    `X-Tidemail-Queue-ID: ${d.msgid}`,
    `Arrival-Date: ${rfc5322Date(new Date(d.arrival))}`,
  ];
  for (const r of d.recipients) {
    lines.push('', `Final-Recipient: rfc822; ${r.recipient}`, `Action: ${r.action}`, `Status: ${r.status}`);
    // A local "remote" is an LMTP socket or host of ours, not the sender's to know.
    if (r.remote && r.route !== 'local') lines.push(`Remote-MTA: dns; ${r.remote}`);
    lines.push(`Diagnostic-Code: smtp; ${said(r)}`);
  }
  lines.push('', `--${boundary}`, 'Content-Type: text/rfc822-headers', 'Content-Description: Undelivered Message Headers', '');
  const head = lines.join('\r\n') + '\r\n';
  const headers = d.originalHeaders.toString('utf8').replace(/\r?\n/g, '\r\n').replace(/(\r\n)*$/, '\r\n');
  return head + headers + `\r\n--${boundary}--\r\n`;
}

/** Reads the header section of a stored message (up to the blank line, at most `max` bytes). */
export async function readHeaders(body: Readable, max = 64 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      parts.push(chunk);
      length += chunk.length;
      const all = Buffer.concat(parts, length);
      const end = all.indexOf('\r\n\r\n');
      if (end >= 0) return all.subarray(0, end + 2);
      if (length >= max) return all.subarray(0, max);
    }
    return Buffer.concat(parts, length);
  } finally {
    body.destroy();
  }
}
