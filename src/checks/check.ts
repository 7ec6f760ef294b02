// The in-session check contract: every check sees a plain CheckContext for one SMTP phase and
// answers with a Verdict (`next | accept | reject | tempfail | disconnect`, Haraka's
// CONT/OK/DENY/DENYSOFT/DENYDISCONNECT). The verdict → SMTP reply mapping lives in smtp/.

export type Phase = 'connect' | 'helo' | 'mail' | 'rcpt' | 'data';

export type Verdict =
  | { action: 'next' }
  | { action: 'accept' }
  | { action: 'reject' | 'tempfail' | 'disconnect'; code: number; enhanced: string; text: string };

/** What a check may look at. Plain data; a check never changes it. */
export interface CheckContext {
  phase: Phase;
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
  size?: number;
  /** Unfolded header fields in order (data phase). */
  headers?: { name: string; value: string }[];
  /** A fresh stream of the raw message each call (data phase). */
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
  close?(): Promise<void>;
}

export const NEXT: Verdict = { action: 'next' };

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
    if (verdict.action !== 'next') return verdict;
  }
  return NEXT;
}
