// `[checks.milter]`: one milter (rspamd, OpenDKIM, clamav-milter, …) over the sendmail/Postfix
// milter protocol (milter.ts). The milter sees the whole SMTP session on one connection, opened
// at the first phase the check runs in and closed when the SMTP connection ends:
//
//   [checks]
//   mail = ["milter"]            # list it early: the milter must see each MAIL to frame messages
//   data = ["milter"]
//   [checks.milter]
//   address = "inet:8891@127.0.0.1"   # or "unix:/run/opendkim/opendkim.sock", "127.0.0.1:11332"
//   timeout = "10s"                   # per reply; the end-of-message reply may take longer
//   on_failure = "tempfail"           # or "accept": go on as if there were no milter
//
// Steps the [checks] lists skip are caught up from the context, so a milter listed at `data`
// only still gets CONNECT, HELO, MAIL and every accepted RCPT before the message.
//
// Of a milter's modifications we apply only added headers, and only at the top of the message
// (ADDHEADER and INSHEADER alike): our receive path can prepend fields but not edit the message.
// CHGHEADER, REPLBODY, QUARANTINE and DISCARD are logged and not applied.

import type { Check, CheckContext, HeaderField, Phase, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';
import type { Macros, MilterResult, MilterSession } from './milter.js';
import { log } from '../log/log.js';

const PHASES: readonly Phase[] = ['connect', 'helo', 'mail', 'rcpt', 'data'];
/** A header section bigger than this is not a mail header (the SMTP layer caps it far lower). */
const MAX_HEADER_SECTION = 1024 * 1024;

export type OnFailure = 'tempfail' | 'accept';

export interface MilterCheckOptions {
  address: string;
  timeoutMs: number;
  /** Deadline for the end-of-message reply (scanners think there). */
  endTimeoutMs: number;
  onFailure: OnFailure;
  /** Our hostname, for the `j` macro. */
  hostname: string;
}

/** What one SMTP session has told its milter so far. */
interface SessionState {
  milter: MilterSession | null;
  /** Runs of one session one after another (a timed-out phase may still be talking). */
  queue: Promise<unknown>;
  connectSent: boolean;
  /** A refusal of the connection stands for every later command (sendmail's rule). */
  connectRefusal: Verdict | null;
  helo: string | undefined;
  /** Which transaction the milter is in (sender and message count), undefined between messages. */
  transaction: string | undefined;
  rcpts: Set<string>;
}

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const address = o.string('address') || o.fail('address', 'is missing', 'write where the milter listens, e.g. address = "inet:8891@127.0.0.1" or "unix:/run/opendkim/opendkim.sock"');
  if (!/^(inet6?:\d+@.+|(unix|local):\/.+|\/.+|\[?[^\]]+\]?:\d+)$/.test(address)) {
    o.fail('address', `"${address}" is not a milter address`, 'write inet:PORT@HOST, unix:/path, /path or host:port');
  }
  const timeoutMs = o.duration('timeout', 10_000);
  if (timeoutMs <= 0) o.fail('timeout', 'must be longer than 0', 'write e.g. timeout = "10s"');
  const onFailure = o.oneOf<OnFailure>('on_failure', ['tempfail', 'accept'], 'tempfail');
  o.rejectUnknown();
  // The whole check has [checks] timeout; the end-of-message reply gets what is left of it, so a
  // hanging milter still ends in our on_failure action rather than in the runner's 451.
  const endTimeoutMs = Math.max(timeoutMs, env.config.checks.timeoutMs - 5_000);
  return new MilterCheck({ address, timeoutMs, endTimeoutMs, onFailure, hostname: env.config.hostname });
}

export class MilterCheck implements Check {
  readonly name = 'milter';
  readonly phases = PHASES;
  private readonly sessions = new Map<string, SessionState>();

  constructor(private readonly opts: MilterCheckOptions) {}

  run(phase: Phase, ctx: CheckContext): Promise<Verdict> {
    let state = this.sessions.get(ctx.sessionId);
    if (!state) {
      state = { milter: null, queue: Promise.resolve(), connectSent: false, connectRefusal: null, helo: undefined, transaction: undefined, rcpts: new Set() };
      this.sessions.set(ctx.sessionId, state);
    }
    const s = state;
    const p = s.queue.then(() => this.step(s, phase, ctx));
    s.queue = p.catch(() => undefined);
    return p;
  }

  sessionEnded(sessionId: string): void {
    void this.endSession(sessionId);
  }

  async close(): Promise<void> {
    await Promise.all([...this.sessions.keys()].map((id) => this.endSession(id)));
  }

  /** QUIT once the session's last step is done (a phase that timed out may still be talking). */
  private async endSession(sessionId: string): Promise<void> {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    this.sessions.delete(sessionId);
    await s.queue.then(() => s.milter?.close()).catch(() => undefined);
  }

  private async step(s: SessionState, phase: Phase, ctx: CheckContext): Promise<Verdict> {
    if (this.sessions.get(ctx.sessionId) !== s) return NEXT; // the session ended meanwhile
    try {
      if (!s.milter) {
        const { openMilterSession } = await import('./milter.js');
        s.milter = await openMilterSession({ address: this.opts.address, timeoutMs: this.opts.timeoutMs, endTimeoutMs: this.opts.endTimeoutMs });
      }
      const v = await this.talk(s, s.milter, phase, ctx);
      return v.action === 'accept' ? NEXT : v; // SMFIS_ACCEPT: no objection, not "skip the other checks"
    } catch (err) {
      // Forget the broken connection; the next phase opens a fresh one and catches it up.
      const m = s.milter;
      s.milter = null;
      s.connectSent = false;
      s.helo = undefined;
      s.transaction = undefined;
      s.rcpts.clear();
      void m?.close().catch(() => undefined);
      if (this.opts.onFailure === 'tempfail') throw err;
      log.warn(ctx.queueId ?? null, 'milter failed; going on without it (on_failure = "accept")', {
        check: 'milter', phase, milter: this.opts.address, error: (err as Error).message,
      });
      return NEXT;
    }
  }

  /** Brings the milter up to `phase` from the context, then asks about `phase` itself. */
  private async talk(s: SessionState, m: MilterSession, phase: Phase, ctx: CheckContext): Promise<Verdict> {
    if (s.connectRefusal) return s.connectRefusal;
    const order = PHASES.indexOf(phase);
    if (!s.connectSent) {
      s.connectSent = true;
      const hostname = ctx.clientHostname ?? `[${ctx.clientAddress}]`;
      const v = await m.connect(hostname, ctx.clientAddress, 0, undefined, {
        j: this.opts.hostname,
        _: `${ctx.clientHostname ?? 'unknown'} [${ctx.clientAddress}]`,
        daemon_name: 'tidemail',
        client_addr: ctx.clientAddress,
        client_name: ctx.clientHostname ?? 'unknown',
      });
      if (v.action !== 'next' && v.action !== 'accept') {
        s.connectRefusal = v;
        return v;
      }
      if (phase === 'connect') return v;
    }
    if (order >= PHASES.indexOf('helo') && ctx.helo !== undefined && ctx.helo !== s.helo) {
      // A second EHLO (after STARTTLS) is passed on too, as sendmail does.
      s.helo = ctx.helo;
      const v = await m.helo(ctx.helo);
      if (phase === 'helo' || (v.action !== 'next' && v.action !== 'accept')) return v;
    } else if (phase === 'helo') {
      return NEXT;
    }
    if (order < PHASES.indexOf('mail')) return NEXT;

    const transaction = `${ctx.messages ?? 0}\n${ctx.sender ?? ''}`;
    if (phase === 'mail' || s.transaction !== transaction) {
      // MAIL always starts a new message (milter.ts aborts one the milter still holds).
      s.transaction = transaction;
      s.rcpts.clear();
      const args: string[] = [];
      if (ctx.size !== undefined && phase !== 'data') args.push(`SIZE=${ctx.size}`);
      if (ctx.smtputf8) args.push('SMTPUTF8');
      const v = await m.mail(ctx.sender ?? '', args, this.mailMacros(ctx));
      if (phase === 'mail' || (v.action !== 'next' && v.action !== 'accept')) return v;
    }

    // Recipients accepted earlier that the milter has not seen (it was listed late, or reopened).
    // Their answers no longer matter: those recipients were already accepted.
    for (const r of ctx.recipients) {
      if (s.rcpts.has(r) || (phase === 'rcpt' && r === ctx.recipient)) continue;
      s.rcpts.add(r);
      const v = await m.rcpt(r, [], { rcpt_addr: r });
      if (v.action !== 'next' && v.action !== 'accept') {
        log.info(ctx.queueId ?? null, 'milter refused an already accepted recipient; kept', { check: 'milter', rcpt: r, reply: describe(v) });
      }
    }
    if (phase === 'rcpt') {
      if (ctx.recipient === undefined) return NEXT;
      s.rcpts.add(ctx.recipient);
      return m.rcpt(ctx.recipient, [], { rcpt_addr: ctx.recipient });
    }

    // data: header fields, end of header, body, end of message.
    s.transaction = undefined;
    s.rcpts.clear();
    if (!ctx.body) throw new Error('the session gave the milter check no message body at DATA');
    const v = await this.sendMessage(m, ctx.body());
    if (v) {
      await m.abort();
      return v;
    }
    const result = await m.endMessage(ctx.queueId ? { i: ctx.queueId } : undefined);
    return this.applyResult(result, ctx);
  }

  private mailMacros(ctx: CheckContext): Macros {
    const macros: Record<string, string> = { mail_addr: ctx.sender ?? '' };
    if (ctx.queueId) macros.i = ctx.queueId;
    if (ctx.authUser) {
      // CheckContext does not carry the SASL mechanism; milters (OpenDKIM) test {auth_type} for
      // presence to tell our own users from strangers.
      macros.auth_authen = ctx.authUser;
      macros.auth_type = 'PLAIN';
    }
    return macros;
  }

  /**
   * Streams the message: its header fields one by one (from the stream itself, so the milter
   * sees our Received: and the fields byte for byte, as Postfix shows them), then the body.
   * @returns a refusal the milter gave before end of message, or null.
   */
  private async sendMessage(m: MilterSession, stream: NodeJS.ReadableStream): Promise<Verdict | null> {
    const it = (stream as AsyncIterable<Buffer | string>)[Symbol.asyncIterator]();
    try {
      let head = Buffer.alloc(0);
      let rest: Buffer | null = null;
      while (rest === null) {
        const next = await it.next();
        if (next.done) {
          rest = Buffer.alloc(0); // headers only, no body
          break;
        }
        const from = Math.max(0, head.length - 3);
        head = Buffer.concat([head, Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value)]);
        if (head.subarray(0, 2).equals(CRLF)) {
          rest = head.subarray(2);
          head = Buffer.alloc(0);
          break;
        }
        const end = head.indexOf(BLANK_LINE, from);
        if (end >= 0) {
          rest = head.subarray(end + 4);
          head = head.subarray(0, end + 2);
        } else if (head.length > MAX_HEADER_SECTION) {
          throw new Error(`the header section is longer than ${MAX_HEADER_SECTION} bytes`);
        }
      }
      for (const f of splitHeaderFields(head)) {
        const v = await m.header(f.name, f.value);
        if (v.action !== 'next') return v.action === 'accept' ? null : v;
      }
      let v = await m.endHeaders();
      if (v.action !== 'next') return v.action === 'accept' ? null : v;
      if (rest.length) {
        v = await m.body(rest);
        if (v.action !== 'next') return v.action === 'accept' ? null : v;
      }
      for (let next = await it.next(); !next.done; next = await it.next()) {
        v = await m.body(Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value));
        if (v.action !== 'next') return v.action === 'accept' ? null : v;
      }
      return null;
    } finally {
      await it.return?.(); // stop reading when we stopped early
    }
  }

  private applyResult(r: MilterResult, ctx: CheckContext): Verdict {
    const id = ctx.queueId ?? null;
    const notApplied = (what: string, fields: Record<string, string | number>) =>
      log.warn(id, `milter asked to ${what}; not applied`, { check: 'milter', milter: this.opts.address, ...fields });
    if (r.quarantine !== undefined) notApplied('quarantine the message', { reason: r.quarantine });
    if (r.discard) notApplied('discard the message', {});
    if (r.verdict.action !== 'next' && r.verdict.action !== 'accept') return r.verdict;
    // INSHEADER (by position, top first) and ADDHEADER (meant for the bottom) both go on top.
    const added: HeaderField[] = [...r.insertHeaders]
      .sort((a, b) => a.index - b.index)
      .map((h) => ({ name: h.name, value: crlf(h.value) }))
      .concat(r.addHeaders.map((h) => ({ name: h.name, value: crlf(h.value) })));
    // CHGHEADER and REPLBODY are applied to the spooled message before it is committed.
    const changes = r.changeHeaders.map((c) => ({ name: c.name, index: c.index, value: crlf(c.value) }));
    if (!added.length && !changes.length && !r.replaceBody) return NEXT;
    return {
      action: 'next',
      addHeaders: added,
      ...(changes.length ? { changeHeaders: changes } : {}),
      ...(r.replaceBody ? { replaceBody: r.replaceBody } : {}),
    };
  }
}

const CRLF = Buffer.from('\r\n');
const BLANK_LINE = Buffer.from('\r\n\r\n');

/** Milters fold with bare LF (libmilter's convention); the message wants CRLF. */
const crlf = (value: string) => value.replace(/\r?\n/g, '\r\n');

function describe(v: Verdict): string {
  return v.action === 'next' || v.action === 'accept' ? v.action : `${v.code} ${v.enhanced} ${v.text}`;
}

/**
 * The fields of a raw header section (CRLF line ends): name, and value without the whitespace
 * after the colon, folds kept as LF + whitespace the way sendmail and Postfix hand them to milters.
 */
export function splitHeaderFields(section: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  const lines = section.toString('utf8').split('\r\n');
  for (const line of lines) {
    if (line === '') continue;
    if ((line[0] === ' ' || line[0] === '\t') && fields.length) {
      fields[fields.length - 1]!.value += '\n' + line;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue; // not a field (the SMTP layer's syntax check refuses these)
    fields.push({ name: line.slice(0, colon).trimEnd(), value: line.slice(colon + 1).replace(/^[ \t]+/, '') });
  }
  return fields;
}
