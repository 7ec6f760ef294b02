// The transport interface: every way mail leaves (smarthost, MX, LMTP, Maildir, pipe, ssh)
// takes a job — one message for some of its recipients — and reports a result per recipient.

import type { Readable } from 'node:stream';
import type { Envelope } from '../queue/store.js';

/** ok | tempfail | permfail | hold ("route offline, no attempt made") | loop. */
export type DeliveryOutcome = 'ok' | 'tempfail' | 'permfail' | 'hold' | 'loop';

export interface DeliveryResult {
  outcome: DeliveryOutcome;
  /** The remote reply or our own explanation, e.g. "550 5.1.1 <x@y>: user unknown". */
  message: string;
  /** The host that gave the answer (for DSN Remote-MTA). */
  remote?: string;
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
