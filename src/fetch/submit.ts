// A fetched message enters the queue like any other, through the intake pipeline: our Received:
// on top, forged Authentication-Results naming us removed, the body streamed into the spool, the data-phase content checks ([checks] data: spamd, clamd, milter) run on the
// spooled message as they do at SMTP end-of-DATA, then the commit (fsync'd) for the envelope's
// recipients with the null sender — it was delivered once already, so it never bounces back to
// a stranger. Only after this resolves does pop3.ts remember (and maybe DELE) the message.
//
// A check's refusal throws MessageRefused: pop3.ts leaves that message on the server, never
// deleted, and goes on with the next. Checks about the SMTP peer (spf-dkim-dmarc, ratelimit,
// policy, dkim-sign) do not run: the peer here is our own mailbox provider, not the sender.

import net from 'node:net';
import type { CheckContext } from '../checks/check.js';
import type { CheckPlan } from '../checks/registry.js';
import { CheckRefusal, submit, type IntakeTarget } from '../intake/pipeline.js';
import { log } from '../log/log.js';
import { qualify } from '../message/address.js';
import { rfc5322Date } from '../message/date.js';
import type { FetchAccount } from './account.js';
import { MessageRefused } from './pop3.js';
import type { FetchEnvelope } from './recipients.js';

/** Data-phase checks that judge the content, and so apply to fetched mail too. */
const CONTENT_CHECKS = new Set(['spamd', 'clamd', 'milter']);

export interface FetchSink extends IntakeTarget {
  hostname: string;
  /** The daemon's checks ([checks]); only the content checks of the data phase run. */
  checks?: CheckPlan | null;
}

/**
 * Spools, checks and commits one fetched message (through the intake pipeline).
 * @throws MessageRefused when a check refuses it; another error when it could not be queued.
 *   Either way nothing is kept and the message stays on the server.
 */
export async function submitFetched(sink: FetchSink, a: FetchAccount, body: AsyncIterable<Buffer>, env?: FetchEnvelope): Promise<void> {
  const recipients = (env?.recipients ?? a.deliverTo).map((r) => qualify(r, sink.hostname));
  const checks = (sink.checks?.data ?? []).filter((c) => CONTENT_CHECKS.has(c.name));
  try {
    await submit(sink, {
      kind: 'fetch',
      hostname: sink.hostname,
      trace: (id) => `Received: from ${a.host} by ${sink.hostname} (tidemail) with POP3 id ${id}${recipients.length === 1 ? `\r\n\tfor <${recipients[0]}>` : ''};\r\n\t${rfc5322Date()}\r\n`,
      checks,
      context: (msg): CheckContext => {
        // Return-Path: is what the provider's MTA saw as MAIL FROM; the best sender there is.
        const returnPath = msg.headers.find((h) => h.name.toLowerCase() === 'return-path')?.value.trim().replace(/^<|>$/g, '');
        return {
          phase: 'data',
          sessionId: `fetch-${msg.queueId}`,
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
          ...msg,
        };
      },
      endsSession: true,
      onRefusal: 'refuse',
      logFields: { account: a.name, ...(env?.from ? { rcpt_from: env.from } : {}) },
    }, { sender: '', recipients, via: 'fetch', client: a.host }, body);
  } catch (err) {
    if (!(err instanceof CheckRefusal)) throw err;
    const v = err.verdict;
    const reply = `${v.code} ${v.enhanced} ${v.text}`;
    log.warn(err.queueId, 'fetched message refused by check; left on the server', { check: v.by, account: a.name, reply });
    throw new MessageRefused(`refused by check ${v.by ?? '?'}: ${reply}`, v.action === 'reject');
  }
}
