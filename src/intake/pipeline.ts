// The one way a message enters the queue, whatever brought it (SMTP DATA, a POP3 fetch, a
// sendmail file picked up from the maildrop): the source says who sent it and how far to trust
// it; this file does, once and in this order,
//
//   our trace lines → header section held back (64 KiB) → forged Authentication-Results
//   removed → bare local addresses qualified (local submissions) → header policy → data checks
//   → their edits → signing, last, over the message exactly as it will be stored → prepend →
//   commit (with the archive copy) → after-commit hook.
//
// Signing is last on purpose: any header changed after a signature breaks it at the receiver
// (issue 15 §7), so nothing may touch the message once a signer has seen it.

import { Readable } from 'node:stream';
import { runChecks, type Check, type CheckContext, type HeaderField, type Verdict } from '../checks/check.js';
import { SmtpError, isDiskFull } from '../errors.js';
import { log } from '../log/log.js';
import { applyHeaderChanges } from '../message/header-edit.js';
import { parseHeaderSection } from '../message/headers.js';
import { qualifyHeaderSection } from '../message/qualify-headers.js';
import type { MessageMeta, RecipientWaiting, Spool } from '../queue/store.js';
import { DataChecker, type DataProblem } from '../smtp/data-check.js';
import { replies } from '../smtp/replies.js';

/** Where accepted messages go: the queue in the daemon, the maildrop in `sendmail -bs`. */
export interface IntakeTarget {
  openMessage(): Spool;
  /** [local] archive: every message but a bounce also goes to this address. */
  archive?: string | null;
  checkTimeoutMs?: number;
  /**
   * Told after each commit, e.g. to wake the delivery runner; `waiting` recipients were stored
   * already waiting for a route (waitingAt), so only the others need a delivery pass.
   */
  committed?(msgid: string, meta: MessageMeta, waiting: number): void;
  /** A recipient of new mail that cannot be delivered now, and how it waits (the runner's view); null: it can go. */
  waitingAt?(sender: string, recipient: string): RecipientWaiting | null;
  /**
   * Runs after the commit and before the caller is answered (pre-queue local delivery). A string
   * is the text of a permanent failure for every recipient: the message is refused with it.
   */
  afterCommit?(msgid: string, meta: MessageMeta): Promise<string | null>;
}

export type SourceKind = 'smtp' | 'fetch' | 'pickup' | 'bounce';

export interface ReceiveLimits {
  maxSize: number;
  /** 0 = no limit. */
  maxLineLength: number;
}

/** The spooled message as the data checks see it. */
export interface SpooledMessage {
  queueId: string;
  size: number;
  headers: HeaderField[];
  headerSection: string;
  body?: () => Readable;
}

/** Who brought the message, how far it is trusted, and what it must pass. */
export interface IntakeSource {
  kind: SourceKind;
  /** Our host name: Authentication-Results naming it are ours alone to write. */
  hostname: string;
  /** Our trace lines (Received:, maybe X-Authentication-Warning:) for queue id `msgid`, CRLF-terminated. */
  trace(msgid: string): string;
  /** Refuse bare CR/LF, NUL, oversize and long lines as they stream (SMTP); unset: taken as is. */
  limits?: ReceiveLimits;
  /** Local submissions: "root" in From:/To:/… becomes root@hostname (Postfix append_at_myorigin). */
  qualifyHeaders?: boolean;
  /** A refusal on the header section alone (an AUTH user's From:). */
  headerCheck?(header: string): Error | null;
  /** A refusal known before any check runs (unsynchronised pipelining). */
  refuse?(queueId: string): SmtpError | null;
  /** The data-phase checks this source's mail passes; signers among them run last. */
  checks: readonly Check[];
  /** The check context for the spooled message. */
  context(msg: SpooledMessage): CheckContext;
  /** A check refused: 'refuse' fails the submission; 'queue' logs and queues anyway (sendmail already said yes). */
  onRefusal: 'refuse' | 'queue';
  /** Extra fields for the log lines ('accepted', 'refused'). */
  logFields: Record<string, string | number | undefined>;
  /**
   * The checks' session is this one message (fetch, pickup): end it after the checks. An SMTP
   * session ends when its connection closes.
   */
  endsSession?: boolean;
}

/** A check's refusal (as opposed to a failure to store): callers may treat it apart. */
export class CheckRefusal extends SmtpError {
  override name = 'CheckRefusal';
  constructor(readonly verdict: Extract<Verdict, { code: number }>, readonly queueId: string) {
    super(verdict.action === 'disconnect' ? 421 : verdict.code, verdict.enhanced, verdict.text);
  }
}

/** Checks that sign the message (DKIM): they run after every other check and edit. */
export function isSigner(c: Check): boolean {
  return c.signsMessage === true;
}

/** The most of a header section held back and given to checks; a longer one is checked as far as this. */
export const HEADER_CAP = 64 * 1024;

const problemReply: Record<DataProblem, (limits: ReceiveLimits) => SmtpError> = {
  'bare-lf': () => replies.bareLf(),
  'bare-cr': () => replies.bareCr(),
  nul: () => replies.nul(),
  'too-big': (l) => replies.tooBig(l.maxSize),
  'line-too-long': (l) => replies.lineTooLong(l.maxLineLength),
};

/** Header fields as text, one per line; values with line breaks are folded onto a tab. */
export function headerLines(fields: readonly HeaderField[]): string {
  return fields.map((f) => `${f.name}: ${f.value.replace(/\r?\n(?![ \t])/g, '\r\n\t').replace(/\r?\n/g, '\r\n')}\r\n`).join('');
}

/**
 * Spools, checks, signs and commits one message.
 * @returns the queue id.
 * @throws SmtpError: a CheckRefusal when a check refused (only with onRefusal 'refuse'), a data
 *   problem, or a local error (nothing is kept). The body is always read to its end.
 */
export async function submit(target: IntakeTarget, source: IntakeSource, envelope: MessageMeta, body: AsyncIterable<Buffer>): Promise<string> {
  const spool = target.openMessage();
  const fields = { from: `<${envelope.sender}>`, via: envelope.via, ...source.logFields };
  const checker = source.limits ? new DataChecker(source.limits.maxSize, source.limits.maxLineLength) : null;
  let header: Buffer | null = Buffer.alloc(0);
  let headerText = '';
  /** Where the field lines end in the stored message (our trace lines plus theirs). */
  let storedHeaderEnd = 0;
  let writeError: unknown = null;
  const write = async (b: Buffer) => {
    if (writeError || !b.length) return;
    try {
      await spool.write(b);
    } catch (err) {
      writeError = err;
    }
  };
  /** Writes the held header section, cleaned (and qualified), and whatever followed it. */
  const release = async (all: Buffer, headerEnd: number) => {
    let cleaned = withoutForgedAuthResults(all.subarray(0, headerEnd).toString('latin1'), source.hostname);
    if (source.qualifyHeaders) cleaned = qualifyHeaderSection(cleaned, source.hostname);
    headerText = Buffer.from(cleaned, 'latin1').toString('utf8');
    storedHeaderEnd += Buffer.byteLength(cleaned, 'latin1');
    await write(Buffer.from(cleaned, 'latin1'));
    await write(all.subarray(headerEnd));
  };
  const trace = Buffer.from(source.trace(spool.msgid), 'utf8');
  storedHeaderEnd = trace.length;
  await write(trace);
  let size = 0;
  try {
    for await (const chunk of body) {
      size += chunk.length;
      if ((checker && !checker.scan(chunk)) || writeError) continue; // keep reading: the sender is still sending
      if (!header) {
        await write(chunk);
        continue;
      }
      header = Buffer.concat([header, chunk]);
      const end = header.indexOf('\r\n\r\n');
      if (end !== -1 || header.length >= HEADER_CAP) {
        const all = header;
        header = null;
        await release(all, end === -1 ? Math.min(all.length, HEADER_CAP) : end + 2);
      }
    }
  } catch (err) {
    // The sender went away mid-message (the body stream fails): drop what was spooled.
    await spool.rollback();
    log.info(spool.msgid, 'aborted', { reason: (err as Error).message, ...fields });
    throw err;
  }
  // A message that is all header (no empty line): release it now.
  if (header && !checker?.problem) await release(header, header.length);
  const problem = checker?.finish() ?? null;
  if (problem) {
    await spool.rollback();
    log.info(spool.msgid, 'refused', { reason: problem, ...fields });
    throw problemReply[problem](source.limits!);
  }
  if (writeError) {
    await spool.rollback();
    return failCommit(spool.msgid, writeError);
  }
  const early = source.headerCheck?.(headerText) ?? source.refuse?.(spool.msgid) ?? null;
  if (early) {
    await spool.rollback();
    throw early;
  }
  try {
    await checkAndSign(target, source, spool, { size, headerText, storedHeaderEnd }, fields);
  } catch (err) {
    await spool.rollback();
    if (err instanceof SmtpError) throw err;
    return failCommit(spool.msgid, err);
  }
  const base = target.archive && source.kind !== 'bounce' ? { ...envelope, recipients: [...envelope.recipients, target.archive] } : envelope;
  // Recipients with no usable route are stored as waiting in the commit itself: no pass of the
  // runner has to load them only to write that down (mail held until a later time is not asked).
  let waiting = 0;
  const waitingAt = target.waitingAt?.bind(target);
  const meta: MessageMeta = waitingAt && base.notBefore === undefined
    ? { ...base, waitingAt: (r) => { const w = waitingAt(base.sender, r); if (w) waiting++; return w; } }
    : base;
  try {
    await spool.commit(meta);
  } catch (err) {
    await spool.rollback();
    return failCommit(spool.msgid, err);
  }
  log.info(spool.msgid, 'accepted', { ...fields, nrcpt: envelope.recipients.length, size });
  // Local delivery first, then wake the runner for the rest: the runner must not race the
  // caller for the local recipients it is about to deliver itself.
  const failed = target.afterCommit ? await target.afterCommit(spool.msgid, meta).catch(() => null) : null;
  target.committed?.(spool.msgid, meta, waiting);
  if (failed) throw replies.deliveryFailed(failed);
  return spool.msgid;
}

/** The data checks, their edits, then the signers over the final message, then one prepend. */
async function checkAndSign(
  target: IntakeTarget, source: IntakeSource, spool: Spool,
  msg: { size: number; headerText: string; storedHeaderEnd: number }, fields: Record<string, unknown>,
): Promise<void> {
  // A source without checks (`sendmail -bs` into the maildrop: the pickup runs them when the
  // daemon queues the message) costs no read-back.
  if (!source.checks.length) return;
  const readBack = spool.readBack();
  const checks = source.checks.filter((c) => !isSigner(c));
  const signers = source.checks.filter(isSigner);
  let headerText = msg.headerText;
  const spooled = (added: string): SpooledMessage => ({
    queueId: spool.msgid, size: msg.size, headers: parseHeaderSection(headerText), headerSection: headerText,
    body: added ? () => Readable.from(withHead(Buffer.from(added, 'utf8'), readBack)) : readBack,
  });
  const sessionIds = new Set<string>();
  const run = async (list: readonly Check[], m: SpooledMessage) => {
    const ctx = source.context(m);
    sessionIds.add(ctx.sessionId);
    return runChecks(list, 'data', ctx, { timeoutMs: target.checkTimeoutMs });
  };
  try {
    let added: HeaderField[] = [];
    if (checks.length) {
      const v = await run(checks, spooled(''));
      if (!refused(v, source, spool.msgid, fields)) {
        added = v.addHeaders ?? [];
        await applyEdits(spool, v, msg.storedHeaderEnd, (section) => (headerText = section));
      }
    }
    // Signers see what the receiver will see: the edited message with the added headers on top.
    let signatures: HeaderField[] = [];
    if (signers.length) {
      const v = await run(signers, spooled(headerLines(added)));
      if (!refused(v, source, spool.msgid, fields)) signatures = v.addHeaders ?? [];
    }
    const top = [...signatures, ...added];
    if (top.length) await spool.prepend(Buffer.from(headerLines(top), 'utf8'));
  } finally {
    if (source.endsSession) for (const c of source.checks) for (const id of sessionIds) c.sessionEnded?.(id);
  }
}

/** False for a passing verdict; a refusal throws, or (onRefusal 'queue') is logged and true. */
function refused(v: Verdict, source: IntakeSource, msgid: string, fields: Record<string, unknown>): v is Extract<Verdict, { code: number }> {
  if (v.action === 'next' || v.action === 'accept') return false;
  const reply = `${v.code} ${v.enhanced} ${v.text}`;
  if (source.onRefusal === 'queue') {
    const why = source.kind === 'bounce' ? 'a delivery status notification is never refused' : 'sendmail had accepted it';
    log.warn(msgid, `check refused ${source.kind === 'bounce' ? 'our notification' : 'a local submission'}; queued anyway (${why})`, { check: v.by, reply });
    return true;
  }
  log.info(msgid, 'refused by check', { check: v.by, phase: 'data', ...fields, reply });
  throw new CheckRefusal(v, msgid);
}

/** A milter's header changes and body replacement, written into the spool. */
async function applyEdits(spool: Spool, v: Verdict, storedHeaderEnd: number, edited: (section: string) => void): Promise<void> {
  if (v.action !== 'next' && v.action !== 'accept') return;
  const changes = v.changeHeaders ?? [];
  if (!changes.length && !v.replaceBody) return;
  await spool.rewrite(storedHeaderEnd, {
    ...(changes.length ? { header: (section: string) => {
      const out = applyHeaderChanges(section, changes);
      edited(Buffer.from(out, 'latin1').toString('utf8'));
      return out;
    } } : {}),
    ...(v.replaceBody ? { body: v.replaceBody } : {}),
  });
  log.info(spool.msgid, 'message edited by a check', { headers: changes.length || undefined, body: v.replaceBody ? 'replaced' : undefined });
}

async function* withHead(head: Buffer, rest: () => Readable): AsyncGenerator<Buffer> {
  yield head;
  for await (const chunk of rest() as AsyncIterable<Buffer>) yield chunk;
}

/**
 * Removes Authentication-Results fields whose authserv-id is our host name (RFC 8601 §5): only
 * we may say what we verified, and a sender must not be able to say it for us. Works on the raw
 * header text (latin1, so bytes survive), leaving every other field exactly as it came.
 */
export function withoutForgedAuthResults(section: string, hostname: string): string {
  if (!/^authentication-results:/im.test(section)) return section;
  const lines = section.split('\r\n');
  const out: string[] = [];
  let dropping = false;
  const ours = hostname.toLowerCase();
  for (const line of lines) {
    if (dropping && (line.startsWith(' ') || line.startsWith('\t'))) continue;
    dropping = false;
    const m = /^authentication-results:\s*(?:\([^)]*\)\s*)?([^\s;]+)/i.exec(line);
    if (m && m[1]!.toLowerCase() === ours) {
      dropping = true;
      continue;
    }
    out.push(line);
  }
  return out.join('\r\n');
}

function failCommit(msgid: string, err: unknown): never {
  const full = isDiskFull(err);
  log.error(msgid, full ? 'refused: disk full' : 'refused: queue write failed', { error: (err as Error)?.message });
  throw full ? replies.diskFull() : replies.localError();
}
