// A fetched message enters the queue like any other: our Received: on top, the body streamed
// into the spool, the data-phase content checks ([checks] data: spamd, clamd, milter) run on the
// spooled message as they do at SMTP end-of-DATA, then the commit (fsync'd) for the envelope's
// recipients with the null sender — it was delivered once already, so it never bounces back to
// a stranger. Only after this resolves does pop3.ts remember (and maybe DELE) the message.
//
// A check's refusal throws MessageRefused: pop3.ts leaves that message on the server, never
// deleted, and goes on with the next. Checks about the SMTP peer (spf-dkim-dmarc, ratelimit,
// policy, dkim-sign) do not run: the peer here is our own mailbox provider, not the sender.

import net from 'node:net';
import { runChecks, type CheckContext, type HeaderField } from '../checks/check.js';
import type { CheckPlan } from '../checks/registry.js';
import { log } from '../log/log.js';
import { qualify } from '../message/address.js';
import { rfc5322Date } from '../message/date.js';
import { parseHeaderSection } from '../message/headers.js';
import type { Spool } from '../queue/store.js';
import { headerLines } from '../smtp/receive.js';
import type { FetchAccount } from './account.js';
import { MessageRefused } from './pop3.js';
import type { FetchEnvelope } from './recipients.js';

/** Data-phase checks that judge the content, and so apply to fetched mail too. */
const CONTENT_CHECKS = new Set(['spamd', 'clamd', 'milter']);
/** As at SMTP: the most of a header section the checks get. */
const HEADER_CAP = 64 * 1024;

export interface FetchSink {
  openMessage(): Spool;
  hostname: string;
  /** The daemon's checks ([checks]); only the content checks of the data phase run. */
  checks?: CheckPlan | null;
  checkTimeoutMs?: number;
  /** After the commit, e.g. to wake the delivery runner. */
  committed?(msgid: string): void;
}

/**
 * Spools, checks and commits one fetched message.
 * @throws MessageRefused when a check refuses it; another error when it could not be queued.
 *   Either way nothing is kept and the message stays on the server.
 */
export async function submitFetched(sink: FetchSink, a: FetchAccount, body: AsyncIterable<Buffer>, env?: FetchEnvelope): Promise<void> {
  const recipients = (env?.recipients ?? a.deliverTo).map((r) => qualify(r, sink.hostname));
  const checks = (sink.checks?.data ?? []).filter((c) => CONTENT_CHECKS.has(c.name));
  const spool = sink.openMessage();
  try {
    const forPart = recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : '';
    const trace = `Received: from ${a.host} by ${sink.hostname} (tidemail) with POP3 id ${spool.msgid}${forPart};\r\n\t${rfc5322Date()}\r\n`;
    await spool.write(Buffer.from(trace, 'utf8'));
    // The header section for the checks, kept only when some check will read it.
    let header: Buffer | null = checks.length ? Buffer.alloc(0) : null;
    let headerText = '';
    for await (const chunk of body) {
      if (header) {
        header = Buffer.concat([header, chunk]);
        const end = header.indexOf('\r\n\r\n');
        if (end !== -1 || header.length >= HEADER_CAP) {
          headerText = header.subarray(0, end === -1 ? HEADER_CAP : end + 2).toString('utf8');
          header = null;
        }
      }
      await spool.write(chunk);
    }
    if (header) headerText = header.toString('utf8');
    if (checks.length) {
      const add = await runContentChecks(sink, a, spool, checks, recipients, headerText);
      if (add.length) await spool.prepend!(Buffer.from(headerLines(add), 'utf8'));
    }
    await spool.commit({ sender: '', recipients, via: 'fetch', client: a.host });
  } catch (err) {
    await spool.rollback();
    throw err;
  }
  log.info(spool.msgid, 'accepted', { from: '<>', nrcpt: recipients.length, size: spool.size, via: 'fetch', account: a.name, ...(env?.from ? { rcpt_from: env.from } : {}) });
  sink.committed?.(spool.msgid);
}

/**
 * The content checks on the spooled message, as SMTP's end-of-DATA runs them.
 * @returns header fields to prepend.
 * @throws MessageRefused on reject, tempfail or disconnect.
 */
async function runContentChecks(sink: FetchSink, a: FetchAccount, spool: Spool, checks: CheckPlan['data'], recipients: string[], headerText: string): Promise<HeaderField[]> {
  const body = spool.readBack ? await spool.readBack() : undefined;
  // Return-Path: is what the provider's MTA saw as MAIL FROM; the best sender there is.
  const headers = parseHeaderSection(headerText);
  const returnPath = headers.find((h) => h.name.toLowerCase() === 'return-path')?.value.trim().replace(/^<|>$/g, '');
  const sessionId = `fetch-${spool.msgid}`;
  const ctx: CheckContext = {
    phase: 'data',
    sessionId,
    listener: 'mx', // mail from outside, like mail to port 25
    trusted: false,
    connection: {},
    transaction: {}, // one message per context: nothing to carry over
    clientAddress: net.isIP(a.host) ? a.host : '0.0.0.0',
    ...(net.isIP(a.host) ? {} : { clientHostname: a.host }),
    helo: a.host,
    sender: returnPath ?? '',
    recipients,
    tls: a.tls !== 'none',
    queueId: spool.msgid,
    size: spool.size,
    headers,
    headerSection: headerText,
    ...(body ? { body } : {}),
  };
  let verdict;
  try {
    verdict = await runChecks(checks, 'data', ctx, { timeoutMs: sink.checkTimeoutMs });
  } finally {
    for (const c of checks) c.sessionEnded?.(sessionId);
  }
  if (verdict.action === 'next' || verdict.action === 'accept') return verdict.addHeaders ?? [];
  const reply = `${verdict.code} ${verdict.enhanced} ${verdict.text}`;
  const permanent = verdict.action === 'reject';
  log.warn(spool.msgid, 'fetched message refused by check; left on the server', { check: verdict.by, account: a.name, reply });
  throw new MessageRefused(`refused by check ${verdict.by ?? '?'}: ${reply}`, permanent);
}
