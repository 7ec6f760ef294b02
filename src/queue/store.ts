// Where messages live between acceptance and delivery. The SQLite backend is in sqlite.ts;
// a second backend (e.g. replicated) fills in this interface without touching sessions or
// transports. The store only stores: *when* to try is schedule/'s business.

import type { Readable } from 'node:stream';

export type RecipientStatus = 'queued' | 'hold';

/** What a submit path knows about a message when it commits it. */
export interface MessageMeta {
  sender: string; // '' for the null sender (bounces)
  recipients: string[];
  /** Where it came from: 'smtp', 'sendmail', 'bounce', … */
  via: string;
  client?: string;
  helo?: string;
  /** Unique token of the source (a maildrop file name) so a re-pickup is not a duplicate. */
  origin?: string;
  /** When delivery should first be tried (default: now). */
  notBefore?: number;
}

/** One recipient of a queued message, joined with its message. */
export interface Envelope {
  envId: string;
  msgid: string;
  recipient: string;
  status: RecipientStatus;
  attempts: number;
  nextAttempt: number;
  lastError: string | null;
  warned: boolean;
  /** When the first real delivery attempt was made (null: never tried, e.g. offline). */
  firstAttempt: number | null;
  sender: string;
  created: number;
  size: number;
  via: string;
}

export interface EnvelopeUpdate {
  envId: string;
  attempts: number;
  nextAttempt: number;
  lastError: string | null;
  warned?: boolean;
  /** Set when no attempt was made because no route was online: the route waited for, or '*'. */
  waiting?: string | null;
  /** The route of the last attempt. */
  route?: string | null;
}

export interface QueuedMessage {
  msgid: string;
  sender: string;
  created: number;
  size: number;
  via: string;
  recipients: Envelope[];
}

export interface Spool {
  readonly msgid: string;
  /** Bytes written so far. */
  readonly size: number;
  /** Appends body bytes; resolves when the store can take more (backpressure). */
  write(chunk: Buffer): Promise<void>;
  /**
   * The message written so far, as a fresh stream each call (end-of-DATA checks read it before
   * the commit). Optional: a spool that cannot read back gets no data-phase checks.
   */
  readBack?(): () => Readable;
  /**
   * Rewrites what was written so far: `header` gets the bytes before `headerEnd` (the field
   * lines) and returns their new text; `body`, when given, replaces everything after the field
   * lines (the empty line is kept). Used for a milter's header changes and body replacement.
   */
  rewrite?(headerEnd: number, edit: { header?: (section: string) => string; body?: readonly Buffer[] }): Promise<void>;
  /** Puts header lines above everything written so far (headers added by checks). Once per message. */
  prepend?(header: Buffer): Promise<void>;
  /** Makes the message visible to the scheduler. Resolves only after fsync. */
  commit(meta: MessageMeta): Promise<void>;
  rollback(): Promise<void>;
}

export interface QueueStore {
  /** Spools a body; nothing is visible to the scheduler until commit(). */
  openMessage(msgid?: string): Spool;
  /** Queued (not held) envelopes due at or before `now`, oldest first. */
  due(now: number, limit: number): Promise<Envelope[]>;
  /** The earliest next_attempt of any queued envelope. */
  nextDue(): Promise<number | null>;
  updateEnvelopes(updates: readonly EnvelopeUpdate[]): Promise<void>;
  /** Removes delivered/bounced envelopes, and their message once none is left. */
  deleteEnvelopes(envIds: readonly string[]): Promise<void>;
  readBody(msgid: string): Readable;
  listMessages(): Promise<QueuedMessage[]>;
  getMessage(msgid: string): Promise<QueuedMessage | undefined>;
  /** Envelopes matching a message or envelope id (or all when id is null). */
  setStatus(id: string | null, status: RecipientStatus): Promise<number>;
  /** Adds recipients to a queued message (an alias that expands to external addresses). */
  addRecipients(msgid: string, addresses: readonly string[]): Promise<void>;
  /** Queued recipients per route (waiting for it, or last tried on it); '*' = no route. */
  countByRoute(): Promise<Record<string, number>>;
  /** Makes everything for `route` due now: waiting for it, or deferred on it. */
  flushRoute(route: string): Promise<number>;
  /** Makes envelopes that wait for `route` (or for any route, with null) due now. */
  releaseWaiting(route: string | null): Promise<number>;
  /** Makes envelopes due now; with id null every queued envelope. */
  requeue(id: string | null): Promise<number>;
  removeMessage(msgid: string): Promise<boolean>;
  hasOrigin(origin: string): Promise<boolean>;
  close(): Promise<void>;
}
