// The in-session check contract: every check sees a plain CheckContext for one SMTP phase and
// answers with a Verdict (`next | accept | reject | tempfail | disconnect`, Haraka's
// CONT/OK/DENY/DENYSOFT/DENYDISCONNECT). The verdict → SMTP reply mapping lives in smtp/.

export type Phase = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data';

/** A header field a check adds to the message (prepended, above our Received:). */
export interface HeaderField {
  name: string;
  value: string;
}

/**
 * Edits a check asks for beyond adding headers (a milter's CHGHEADER and REPLBODY): applied to
 * the spooled message before it is committed.
 */
export interface MessageEdits {
  /** The `index`-th (1-based) field called `name`, counting our Received: on top: a new value, or deleted when ''. */
  changeHeaders?: { name: string; index: number; value: string }[];
  /** The new body (everything after the empty line), CRLF line ends. */
  replaceBody?: Buffer[];
}

export type Verdict =
  | ({ action: 'next'; addHeaders?: HeaderField[] } & MessageEdits)
  | ({ action: 'accept'; addHeaders?: HeaderField[] } & MessageEdits)
  | { action: 'reject' | 'tempfail' | 'disconnect'; code: number; enhanced: string; text: string; by?: string };

/** Which listener a session came in on ('stream' = inetd / `sendmail -bs`, 'pickup' = maildrop). */
export type ListenerKind = 'mx' | 'submission' | 'smtps' | 'stream' | 'pickup';

/** RFC 8601 result keywords (the ones mailauth reports for DKIM, ARC and DMARC). */
export type AuthResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'policy' | 'temperror' | 'permerror';

export type SpfResult = 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'temperror' | 'permerror';

/**
 * What checks learned about the client, kept for the whole connection (Haraka's
 * connection.notes). Only facts about the client address belong here: a fact about one message
 * or one sender here would vouch for every later message on the connection.
 */
export interface ConnectionNotes {
  /** dnswl: the client is on an allow list. */
  dnswl?: boolean;
  /** dnswl: the weight of the zones listing it (0 when none), once looked up. */
  dnswlWeight?: number;
}

/**
 * What checks learned about one message (Haraka's transaction.notes): new at every MAIL FROM,
 * gone at RSET, HELO/EHLO, STARTTLS and the end of DATA.
 */
export interface TransactionNotes {
  /** spf-dkim-dmarc: SPF for this MAIL FROM (at MAIL, or at DATA when listed only there). */
  spf?: SpfResult;
  /** spf-dkim-dmarc, end of DATA: 'pass' when any signature passed, else the first one's result. */
  dkim?: AuthResult;
  dmarc?: AuthResult;
  arc?: AuthResult;
  /** DMARC failed with p=quarantine and dmarc_policy = "honour". */
  dmarcQuarantine?: boolean;
}

/** What a check may look at. Plain data; a check changes only the notes. */
export interface CheckContext {
  phase: Phase;
  /** Unique per SMTP connection; checks keep per-session state keyed by it (see sessionEnded). */
  sessionId: string;
  listener: ListenerKind;
  /** The client is in trusted_networks (or a local user on stdin). */
  trusted: boolean;
  /** Notes shared by the checks for the whole connection. */
  connection: ConnectionNotes;
  /** Notes shared by the checks for this message; absent outside a transaction (connect, helo). */
  transaction?: TransactionNotes;
  clientAddress: string;
  clientHostname?: string;
  helo?: string;
  sender?: string;
  /** The recipient being checked (rcpt phase). */
  recipient?: string;
  /** Recipients accepted so far in this transaction. */
  recipients: string[];
  authUser?: string;
  tls: boolean;
  queueId?: string;
  /** MAIL FROM SIZE= at mail/rcpt; the real size at data. */
  size?: number;
  /** The client said SMTPUTF8 on MAIL FROM. */
  smtputf8?: boolean;
  /** Messages accepted so far on this connection. */
  messages?: number;
  /** Header fields in order, value unfolded and without the leading space (data phase). */
  headers?: HeaderField[];
  /** The raw header section as received, CRLF line ends, up to 64 KiB (data phase). */
  headerSection?: string;
  /**
   * A fresh stream of the whole message as received each call (data phase), our Received: on
   * top, CRLF line ends, no dot-stuffing. Read it as a stream: never buffer the whole message.
   */
  body?: () => NodeJS.ReadableStream;
}

/** One in-session check. */
export interface Check {
  readonly name: string;
  readonly phases: readonly Phase[];
  /**
   * Decides for one phase. Normal refusals are verdicts.
   * @throws when the check cannot decide (peer down, protocol error); runChecks turns that into a tempfail.
   */
  run(phase: Phase, ctx: CheckContext): Promise<Verdict>;
  /**
   * Also run at 'data' for mail local users submit with sendmail (maildrop pickup): checks that
   * add headers, such as DKIM signing. Their refusals are only logged there: sendmail has
   * already told the user the message was accepted.
   */
  readonly localSubmissions?: boolean;
  /**
   * Signs the message (DKIM): runs after every other check and edit, over the message exactly
   * as it will be stored, so nothing can change a signed header afterwards (intake/pipeline.ts).
   */
  readonly signsMessage?: boolean;
  /** The SMTP connection `sessionId` closed: drop per-session state (a milter connection, …). */
  sessionEnded?(sessionId: string): void;
  /** The daemon stops. */
  close?(): Promise<void>;
}

export const NEXT: Verdict = { action: 'next' };

/** A refusal verdict from one of our SmtpError replies (smtp/replies.ts). */
export function refusal(err: { responseCode: number; enhanced: string; message: string }): Verdict {
  const code = err.responseCode;
  const text = err.message.startsWith(`${err.enhanced} `) ? err.message.slice(err.enhanced.length + 1) : err.message;
  return { action: code >= 500 ? 'reject' : code === 421 ? 'disconnect' : 'tempfail', code, enhanced: err.enhanced, text };
}

/** The verdict for a check that failed to decide: never accept, ask the client to retry. */
export function checkFailed(name: string, why: string): Verdict {
  return { action: 'tempfail', code: 451, enhanced: '4.3.0', text: `Temporary failure in check ${name}: ${why}` };
}

export interface RunChecksOptions {
  /** Per-check deadline in ms (default 30 s). */
  timeoutMs?: number;
}

/**
 * Runs the checks registered for `phase` in order; the first verdict that is not `next` wins.
 * @returns `next` when every check passed; a 451 4.3.0 tempfail naming the check when one threw or
 * timed out.
 */
export async function runChecks(checks: readonly Check[], phase: Phase, ctx: CheckContext, opts: RunChecksOptions = {}): Promise<Verdict> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  // Headers added (and edits asked for) by checks that passed are kept, whatever the later checks say.
  const added: HeaderField[] = [];
  const edits: MessageEdits = {};
  for (const check of checks) {
    if (!check.phases.includes(phase)) continue;
    let timer: NodeJS.Timeout | undefined;
    let verdict: Verdict;
    try {
      verdict = await Promise.race([
        check.run(phase, ctx),
        new Promise<Verdict>((resolve) => {
          timer = setTimeout(() => resolve(checkFailed(check.name, `no answer within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]);
    } catch (err) {
      verdict = checkFailed(check.name, (err as Error)?.message ?? String(err));
    } finally {
      clearTimeout(timer);
    }
    if (verdict.action === 'next' || verdict.action === 'accept') {
      if (verdict.addHeaders) added.push(...verdict.addHeaders);
      if (verdict.changeHeaders) (edits.changeHeaders ??= []).push(...verdict.changeHeaders);
      if (verdict.replaceBody) edits.replaceBody = verdict.replaceBody;
    }
    if (verdict.action === 'accept') return { action: 'accept', addHeaders: added, ...edits };
    if (verdict.action !== 'next') return { ...verdict, by: check.name };
  }
  return added.length || edits.changeHeaders || edits.replaceBody ? { action: 'next', addHeaders: added, ...edits } : NEXT;
}
