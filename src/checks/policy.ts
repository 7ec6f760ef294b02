// Postfix policy delegation client (Postfix SMTPD_POLICY_README), so existing policy daemons
// (postgrey, postfwd, policyd-spf) work unchanged.
//
// Wire format: the request is `name=value` lines ending with an empty line; the reply is
// `action=…` (plus optional other attributes) ending with an empty line. One connection carries
// many requests, one at a time.

import net from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Check, CheckContext, Phase, Verdict } from './check.js';

export interface PolicyClientOptions {
  /** `host:port`, `[v6]:port`, or a unix socket path (starts with `/`). */
  address: string;
  /** Per-request deadline in ms (default 10 s). */
  timeoutMs?: number;
}

/** A reused connection to one policy server; requests are serialized. */
export interface PolicyClient {
  /**
   * Sends one request and returns the raw `action=` value.
   * @throws Error when the server cannot be reached, times out or answers without `action=`.
   */
  query(attrs: Readonly<Record<string, string | number | undefined>>): Promise<string>;
  close(): Promise<void>;
}

function connectOptions(address: string): net.NetConnectOpts {
  if (address.startsWith('/')) return { path: address };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m) throw new Error(`policy server address "${address}" is neither host:port nor a socket path`);
  return { host: m[1]!, port: Number(m[2]) };
}

export function createPolicyClient(opts: PolicyClientOptions): PolicyClient {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const target = connectOptions(opts.address);
  let socket: net.Socket | null = null;
  let buffer = '';
  let waiter: ((err: Error | null, reply?: string) => void) | null = null;
  let chain: Promise<unknown> = Promise.resolve();

  const drop = (err: Error) => {
    const s = socket;
    socket = null;
    buffer = '';
    s?.destroy();
    const w = waiter;
    waiter = null;
    w?.(err);
  };

  const open = () =>
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(target);
      s.setEncoding('utf8');
      s.once('connect', () => {
        s.off('error', reject);
        s.on('error', (err) => socket === s && drop(err));
        s.on('close', () => socket === s && drop(new Error('policy server closed the connection')));
        s.on('data', (d: string) => {
          if (socket !== s) return;
          buffer += d.replace(/\r/g, ''); // tolerate CRLF servers
          const end = buffer.indexOf('\n\n');
          if (end < 0) return;
          const reply = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const w = waiter;
          waiter = null;
          w?.(null, reply);
        });
        resolve(s);
      });
      s.once('error', reject);
    });

  const exchange = (s: net.Socket, request: string) =>
    new Promise<string>((resolve, reject) => {
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        drop(new Error(`policy server ${opts.address}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      waiter = (err, r) => {
        clearTimeout(timer);
        if (err) reject(Object.assign(err, { timedOut }));
        else resolve(r!);
      };
      s.write(request);
    });

  const once = async (request: string): Promise<string> => {
    const reused = !!socket && !socket.destroyed;
    if (!reused) socket = await open();
    let reply: string;
    try {
      reply = await exchange(socket!, request);
    } catch (err) {
      // The server may close an idle connection (postgrey --exim, restarts): retry once, fresh.
      if (!reused || (err as { timedOut?: boolean }).timedOut) throw err;
      socket = await open();
      reply = await exchange(socket, request);
    }
    for (const line of reply.split('\n')) {
      if (line.startsWith('action=')) return line.slice('action='.length).trim();
    }
    throw new Error(`policy server ${opts.address}: reply without action= (${JSON.stringify(reply.slice(0, 200))})`);
  };

  return {
    query(attrs) {
      let request = '';
      for (const [k, v] of Object.entries(attrs)) {
        // A newline in a value would end the request early; Postfix never sends one.
        request += `${k}=${String(v ?? '').replace(/[\r\n]/g, ' ')}\n`;
      }
      request += '\n';
      const p = chain.then(
        () => once(request),
        () => once(request),
      );
      chain = p.catch(() => undefined);
      return p;
    },
    async close() {
      await chain;
      const s = socket;
      socket = null;
      if (s && !s.destroyed) await new Promise<void>((r) => s.end(r));
      s?.destroy();
    },
  };
}

/** The verdict for a policy action, and the reason when an action was noted but not applied. */
export interface PolicyDecision {
  verdict: Verdict;
  /** Set for actions we do not act on (HOLD, DISCARD, PREPEND, FILTER, …), for the log. */
  ignored?: string;
}

/** Splits an optional leading RFC 3463 enhanced code off a reply text. */
function splitEnhanced(text: string, cls: '4' | '5'): { enhanced: string; text: string } {
  const m = /^([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)(.*)$/s.exec(text);
  if (m && m[1]![0] === cls) return { enhanced: m[1]!, text: m[2]! };
  return { enhanced: `${cls}.7.1`, text };
}

/** Maps an `action=` value to a verdict (SMTPD_POLICY_README; access(5) actions). */
export function policyDecision(action: string): PolicyDecision {
  const m = /^(\S+)\s*(.*)$/s.exec(action.trim());
  const word = (m?.[1] ?? '').toUpperCase();
  const rest = (m?.[2] ?? '').trim();
  const refuse = (kind: 'reject' | 'tempfail', code: number, text: string, fallback: string): PolicyDecision => {
    const e = splitEnhanced(text, kind === 'reject' ? '5' : '4');
    return { verdict: { action: kind, code, enhanced: e.enhanced, text: e.text || fallback } };
  };
  if (/^[45]\d\d$/.test(word)) {
    const code = Number(word);
    return refuse(code >= 500 ? 'reject' : 'tempfail', code, rest, 'Policy rejection');
  }
  switch (word) {
    case 'OK':
    case 'DUNNO':
    case '':
      return { verdict: { action: 'next' } };
    case 'REJECT':
      return refuse('reject', 554, rest, 'Access denied');
    case 'DEFER':
    case 'DEFER_IF_PERMIT':
      // DEFER_IF_PERMIT waits for a later permit in Postfix; we have no later restriction list.
      return refuse('tempfail', 450, rest, 'Try again later');
    default:
      // HOLD, DISCARD, PREPEND, REDIRECT, FILTER, WARN, INFO, BCC, DEFER_IF_REJECT: not acted on.
      return { verdict: { action: 'next' }, ignored: action };
  }
}

const STATE: Record<Phase, string> = { connect: 'CONNECT', helo: 'EHLO', mail: 'MAIL', rcpt: 'RCPT', data: 'END-OF-MESSAGE' };

/** Request attributes for a phase (Postfix 2.x–3.x names; unknown values are sent empty). */
export function policyRequest(phase: Phase, ctx: CheckContext, instance: string): Record<string, string | number> {
  return {
    request: 'smtpd_access_policy',
    protocol_state: STATE[phase],
    // CheckContext does not say HELO vs EHLO; tidemail clients are nearly always ESMTP.
    protocol_name: 'ESMTP',
    helo_name: ctx.helo ?? '',
    queue_id: ctx.queueId ?? '',
    sender: ctx.sender ?? '',
    recipient: ctx.recipient ?? (phase === 'data' && ctx.recipients.length === 1 ? ctx.recipients[0]! : ''),
    recipient_count: phase === 'data' ? ctx.recipients.length : 0,
    client_address: ctx.clientAddress,
    client_name: ctx.clientHostname ?? 'unknown',
    reverse_client_name: ctx.clientHostname ?? 'unknown',
    instance,
    sasl_username: ctx.authUser ?? '',
    size: ctx.size ?? 0,
    encryption_protocol: ctx.tls ? 'TLS' : '',
  };
}

export interface PolicyCheckOptions extends PolicyClientOptions {
  /** Check name in logs and tempfail texts (default `policy`). */
  name?: string;
  /** Phases to ask about (default `['rcpt']`, Postfix's usual smtpd_recipient_restrictions). */
  phases?: readonly Phase[];
  /** Called for actions that were received but not acted on. */
  onIgnored?: (action: string, ctx: CheckContext) => void;
}

/** A Check that asks a policy server; a failure to get an answer throws (→ 451 via runChecks). */
export function policyCheck(opts: PolicyCheckOptions): Check {
  const client = createPolicyClient(opts);
  // Postfix's `instance` is the same for every request of one transaction.
  const instances = new Map<string, string>();
  const instanceFor = (ctx: CheckContext) => {
    const key = `${ctx.clientAddress}|${ctx.sender ?? ''}|${ctx.queueId ?? ''}`;
    let v = instances.get(key);
    if (!v) {
      if (instances.size > 1000) instances.clear();
      v = randomBytes(6).toString('hex');
      instances.set(key, v);
    }
    return v;
  };
  return {
    name: opts.name ?? 'policy',
    phases: opts.phases ?? ['rcpt'],
    async run(phase, ctx) {
      const action = await client.query(policyRequest(phase, ctx, instanceFor(ctx)));
      const d = policyDecision(action);
      if (d.ignored) opts.onIgnored?.(d.ignored, ctx);
      return d.verdict;
    },
    close: () => client.close(),
  };
}
