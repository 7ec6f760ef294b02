// DATA → spool → commit. The body streams through the checker into the store chunk by chunk;
// the 250 is sent only after the store says the commit is on disk.

import type { Readable } from 'node:stream';
import type { HeaderField, MessageEdits } from '../checks/check.js';
import { applyHeaderChanges } from '../message/header-edit.js';
import { SmtpError, isDiskFull } from '../errors.js';
import { log } from '../log/log.js';
import { rfc5322Date } from '../message/date.js';
import { parseHeaderSection } from '../message/headers.js';
import type { MessageMeta, Spool } from '../queue/store.js';
import { DataChecker, type DataProblem } from './data-check.js';
import { replies } from './replies.js';

/** Where accepted messages go: the queue in the daemon, the maildrop in `sendmail -bs`. */
export interface MessageSink {
  openMessage(): Spool;
  /** Told after each commit, e.g. to wake the delivery runner. */
  committed?(msgid: string, meta: MessageMeta): void;
  /**
   * Runs after the commit and before the reply (pre-queue local delivery). A string is the
   * text of a permanent failure for every recipient: the message is refused with it.
   */
  afterCommit?(msgid: string, meta: MessageMeta): Promise<string | null>;
}

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

/** The most of a header section kept for checks; a longer one is checked as far as this. */
const HEADER_CAP = 64 * 1024;

const problemReply: Record<DataProblem, (limits: ReceiveLimits) => SmtpError> = {
  'bare-lf': () => replies.bareLf(),
  'bare-cr': () => replies.bareCr(),
  nul: () => replies.nul(),
  'too-big': (l) => replies.tooBig(l.maxSize),
  'line-too-long': (l) => replies.lineTooLong(l.maxLineLength),
};

export interface ReceiveLimits {
  maxSize: number;
  /** 0 = no limit. */
  maxLineLength: number;
}

/** The spooled message as the end-of-DATA checks see it. */
export interface SpooledMessage {
  queueId: string;
  size: number;
  headers: HeaderField[];
  headerSection: string;
  body?: () => Readable;
}

/**
 * End-of-DATA decision (the data-phase checks): an error refuses the message (nothing is
 * queued), headers are prepended to it.
 */
export type DataPhase = (msg: SpooledMessage) => Promise<{
  error: Error | null;
  addHeaders: HeaderField[];
  /** Header changes and body replacement (a milter's), applied before the commit. */
  edits?: MessageEdits;
  /** Names of the checks passed, for the log. */
  passed?: string;
}>;

/** Header fields as text, one per line; values with line breaks are folded onto a tab. */
export function headerLines(fields: readonly HeaderField[]): string {
  return fields.map((f) => `${f.name}: ${f.value.replace(/\r?\n(?![ \t])/g, '\r\n\t').replace(/\r?\n/g, '\r\n')}\r\n`).join('');
}

/**
 * Streams one message into the sink. Resolves with the 250 text; rejects with an SmtpError.
 * The data stream is always read to its end, so the session stays in sync with the client.
 */
export async function receiveMessage(
  data: Readable,
  sink: MessageSink,
  meta: Omit<MessageMeta, 'recipients'> & { recipients: string[] },
  trace: TraceInfo,
  limits: ReceiveLimits,
  headerCheck?: (header: string) => Error | null,
  dataPhase?: DataPhase,
): Promise<string> {
  const spool = sink.openMessage();
  const checker = new DataChecker(limits.maxSize, limits.maxLineLength);
  // The header section is held back (up to 64 KiB) until it is complete: checks read it, and
  // Authentication-Results fields that claim to be ours are removed before anything is stored.
  let header: Buffer | null = Buffer.alloc(0);
  let headerText = '';
  /** Where the field lines end in the stored message (our Received: plus theirs). */
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
  /** Writes the held header section (cleaned) and whatever followed it in the same chunks. */
  const release = async (all: Buffer, headerEnd: number) => {
    const cleaned = withoutForgedAuthResults(all.subarray(0, headerEnd).toString('latin1'), trace.hostname);
    headerText = Buffer.from(cleaned, 'latin1').toString('utf8');
    storedHeaderEnd += Buffer.byteLength(cleaned, 'latin1');
    await write(Buffer.from(cleaned, 'latin1'));
    await write(all.subarray(headerEnd));
  };
  const received = Buffer.from(receivedHeader(trace, spool.msgid), 'utf8');
  storedHeaderEnd = received.length;
  await write(received);
  try {
    for await (const chunk of data as AsyncIterable<Buffer>) {
      if (!checker.scan(chunk) || writeError) continue; // keep reading: the client is still sending
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
    // The client went away mid-DATA (smtp-server destroys the stream): drop what was spooled,
    // or its chunks would stay in the queue until the next start.
    await spool.rollback();
    log.info(spool.msgid, 'aborted', { reason: (err as Error).message, from: `<${meta.sender}>`, client: trace.clientAddress });
    throw err;
  }
  // A message that is all header (no empty line): release it now.
  if (header && !checker.problem) await release(header, header.length);
  const problem = checker.finish();
  const refusal = !problem && !writeError && headerCheck ? headerCheck(headerText) : null;
  if (refusal) {
    await spool.rollback();
    throw refusal;
  }
  if (problem || writeError) {
    await spool.rollback();
    if (problem) {
      log.info(spool.msgid, 'refused', { reason: problem, from: `<${meta.sender}>`, client: trace.clientAddress });
      throw problemReply[problem](limits);
    }
    return failCommit(spool.msgid, writeError);
  }
  let decision: Awaited<ReturnType<DataPhase>> | null = null;
  if (dataPhase) {
    try {
      const body = spool.readBack?.();
      decision = await dataPhase({
        queueId: spool.msgid, size: checker.size, headers: parseHeaderSection(headerText), headerSection: headerText, ...(body ? { body } : {}),
      });
      const edits = decision.error ? undefined : decision.edits;
      if (edits?.changeHeaders?.length || edits?.replaceBody) {
        const changes = edits.changeHeaders ?? [];
        await spool.rewrite!(storedHeaderEnd, {
          ...(changes.length ? { header: (section: string) => applyHeaderChanges(section, changes) } : {}),
          ...(edits.replaceBody ? { body: edits.replaceBody } : {}),
        });
        log.info(spool.msgid, 'message edited by a check', { headers: changes.length || undefined, body: edits.replaceBody ? 'replaced' : undefined });
      }
      if (!decision.error && decision.addHeaders.length) await spool.prepend!(Buffer.from(headerLines(decision.addHeaders), 'utf8'));
    } catch (err) {
      await spool.rollback();
      return failCommit(spool.msgid, err);
    }
    if (decision!.error) {
      await spool.rollback();
      throw decision!.error;
    }
  }
  try {
    await spool.commit(meta);
  } catch (err) {
    await spool.rollback();
    return failCommit(spool.msgid, err);
  }
  log.info(spool.msgid, 'accepted', {
    from: `<${meta.sender}>`, nrcpt: meta.recipients.length, size: checker.size, client: trace.clientAddress, via: meta.via, checks: decision?.passed,
  });
  // Local delivery first, then wake the runner for the rest: the runner must not race the
  // session for the local recipients it is about to deliver itself.
  const failed = sink.afterCommit ? await sink.afterCommit(spool.msgid, meta).catch(() => null) : null;
  sink.committed?.(spool.msgid, meta);
  if (failed) throw replies.deliveryFailed(failed);
  return replies.queued(spool.msgid);
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
