// The transport interface: every way mail leaves (smarthost, MX, LMTP, Maildir, pipe, ssh)
// takes a job — one message for some of its recipients — and reports a result per recipient.

import type { Readable } from 'node:stream';
import type { Envelope } from '../queue/store.js';

/**
 * ok | tempfail | permfail | hold ("route offline, no attempt made") | loop |
 * interrupted (the route's link went down during the delivery: not an attempt, tried again
 * as soon as a route is up).
 */
export type DeliveryOutcome = 'ok' | 'tempfail' | 'permfail' | 'hold' | 'loop' | 'interrupted';

export interface DeliveryResult {
  outcome: DeliveryOutcome;
  /** The remote reply or our own explanation, e.g. "550 5.1.1 <x@y>: user unknown". */
  message: string;
  /** The host that gave the answer (for DSN Remote-MTA). */
  remote?: string;
  /**
   * A tempfail of the link, not of the peer (the progress watchdog, a reset or unreachable
   * host on a link that just came up): tried again within seconds for the first few attempts.
   */
  retrySoon?: boolean;
}

export interface DeliveryJob {
  msgid: string;
  sender: string;
  size: number;
  recipients: Envelope[];
  /** A fresh stream of the stored message each call. */
  body(): Readable;
}

export interface Transport {
  readonly name: string;
  deliver(job: DeliveryJob): Promise<Map<string, DeliveryResult>>;
  /** The route's link went down: cut every session now; their deliveries end "interrupted". */
  interrupt?(why: string): void;
  /** The route's link is up again (after interrupt()). */
  resume?(): void;
  /** The daemon is stopping: stop waiting for what only a link-up could bring (smtp-after-dot.ts). */
  stopWaiting?(): void;
  close(): Promise<void>;
}

/** The same result for every recipient of a job. */
export function sameForAll(job: DeliveryJob, result: DeliveryResult): Map<string, DeliveryResult> {
  return new Map(job.recipients.map((r) => [r.envId, result]));
}

/** What nodemailer's SMTP/LMTP client errors carry. */
export interface SmtpErrorLike extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  recipient?: string;
  rejectedErrors?: SmtpErrorLike[];
}
