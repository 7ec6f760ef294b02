// Where messages live between acceptance and delivery. The SQLite backend is in sqlite.ts;
// a second backend (e.g. replicated) fills in this interface without touching sessions or
// transports, and proves it by passing test/queue/store-contract.test.ts. The store only
// stores: *when* to try is the runner's business, what an administrator may do to the queue is
// admin.ts's, and the time comes from the caller's clock (never read here), so a test can step it.

import type { Readable } from 'node:stream';

/** Milliseconds since the epoch, as the caller sees them (Date.now in production, stepped in tests). */
export type Clock = () => number;

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
  /**
   * Asked once per recipient in the step that queues the commit (after any wait, so nothing can
   * happen in between): a recipient that cannot be delivered now is stored already waiting for a
   * route, as the runner would record it, and costs no delivery pass. A store may ignore it.
   */
  waitingAt?(recipient: string): RecipientWaiting | null;
}

/** A new recipient stored as waiting: for which route ('*': any), why, and when to look again. */
export interface RecipientWaiting {
  waiting: string;
  lastError: string;
  nextAttempt: number;
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

/**
 * One message being written. Every method is required: the intake pipeline reads back, edits
 * and prepends for every source, so a backend that cannot is not a backend.
 */
export interface Spool {
  readonly msgid: string;
  /** Bytes written so far. */
  readonly size: number;
  /** Appends body bytes; resolves when the store can take more (backpressure). */
  write(chunk: Buffer): Promise<void>;
  /** The message written so far, as a fresh stream each call (end-of-DATA checks read it before the commit). */
  readBack(): () => Readable;
  /**
   * Rewrites what was written so far: `header` gets the bytes before `headerEnd` (the field
   * lines) and returns their new text; `body`, when given, replaces everything after the field
   * lines (the empty line is kept). Used for a milter's header changes and body replacement.
   */
  rewrite(headerEnd: number, edit: { header?: (section: string) => string; body?: readonly Buffer[] }): Promise<void>;
  /** Puts header lines above everything written so far (headers added by checks). Once per message. */
  prepend(header: Buffer): Promise<void>;
  /** Makes the message visible to the scheduler. Resolves only after fsync. */
  commit(meta: MessageMeta): Promise<void>;
  rollback(): Promise<void>;
}

/** Storage alone: messages in, envelopes due, results recorded, messages out. */
export interface QueueStore {
  /** Spools a new message (its id from ids.ts); nothing is visible to the scheduler until commit(). */
  openMessage(): Spool;
  /** Queued (not held) envelopes due at or before `now`, oldest first. */
  due(now: number, limit: number): Promise<Envelope[]>;
  /** The earliest next_attempt of any queued envelope. */
  nextDue(): Promise<number | null>;
  updateEnvelopes(updates: readonly EnvelopeUpdate[]): Promise<void>;
  /** Removes delivered/bounced envelopes, and their message once none is left. */
  deleteEnvelopes(envIds: readonly string[]): Promise<void>;
  readBody(msgid: string): Readable;
  listMessages(): Promise<QueuedMessage[]>;
  /** The message a message or envelope id names. */
  getMessage(id: string): Promise<QueuedMessage | undefined>;
  /** Adds recipients to a queued message (an alias that expands to external addresses), due now. */
  addRecipients(msgid: string, addresses: readonly string[]): Promise<void>;
  /** Whether a message with this origin (a maildrop file) was committed: a re-pickup is not a duplicate. */
  hasOrigin(origin: string): Promise<boolean>;
  close(): Promise<void>;
}
