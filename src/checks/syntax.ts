// Header and HELO sanity (RFC 5322 §3.6, RFC 5321 §4.1.1.1). Runs by default at end of DATA for
// every client, so the rules split in two: what is wrong for anyone (a second From:, a header
// section too big to be honest) and what only an untrusted, unauthenticated client must get right
// (From: and Date: present — our own MUAs and cron jobs may leave them for us to add).
//
// Every refusal says which rule was broken, so a sender's postmaster can fix it from the bounce.

import net from 'node:net';
import type { Check, CheckContext, HeaderField, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';

/** RFC 5322 §3.6: the fields that may occur at most once (the "max 1" rows of the table). */
const AT_MOST_ONCE = ['date', 'from', 'sender', 'reply-to', 'to', 'cc', 'bcc', 'message-id', 'in-reply-to', 'references', 'subject'];

/** Field names as the RFC writes them, for replies. */
const DISPLAY: Record<string, string> = { date: 'Date', 'message-id': 'Message-ID', 'reply-to': 'Reply-To', 'in-reply-to': 'In-Reply-To' };
const display = (name: string) => DISPLAY[name] ?? name.charAt(0).toUpperCase() + name.slice(1);

export type EightBitPolicy = 'refuse' | 'trusted' | 'allow';

export interface SyntaxOptions {
  maxHeaders: number;
  maxHeaderSize: number;
  /** Whether a HELO name needs a dot (an FQDN, RFC 5321 §4.1.1.1), not just a label. */
  heloFqdn: boolean;
  /**
   * 8-bit bytes in header fields without SMTPUTF8: `refuse` for everyone, `trusted` (default)
   * allows them from trusted clients only (local scripts write raw UTF-8 subjects), `allow`.
   */
  eightBitHeaders: EightBitPolicy;
}

const reject = (code: number, enhanced: string, text: string): Verdict => ({ action: 'reject', code, enhanced, text });

/** A HELO argument that is a domain name (LDH labels) or an address literal; null when fine. */
export function heloProblem(helo: string, requireDot: boolean): string | null {
  const literal = /^\[(.*)\]$/.exec(helo);
  if (literal) {
    const inner = literal[1]!;
    if (/^IPv6:/i.test(inner)) return net.isIPv6(inner.slice(5)) ? null : `"${helo}" is not a valid IPv6 address literal`;
    return net.isIPv4(inner) ? null : `"${helo}" is not a valid address literal (write [192.0.2.1] or [IPv6:2001:db8::1])`;
  }
  if (net.isIP(helo)) return `"${helo}" is a bare IP address; an address literal needs brackets: [${net.isIPv6(helo) ? 'IPv6:' : ''}${helo}]`;
  if (helo.length > 253) return `"${helo.slice(0, 40)}…" is longer than 253 characters`;
  const labels = helo.split('.');
  for (const label of labels) {
    if (!/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label)) return `"${helo}" is neither a domain name nor an address literal`;
  }
  if (requireDot && labels.length < 2) return `"${helo}" is not a fully qualified domain name`;
  return null;
}

/** Splits a raw header section into fields (unfolded), for when the session gives us only the text. */
export function parseHeaderSection(section: string): HeaderField[] {
  const fields: HeaderField[] = [];
  for (const line of section.split(/\r?\n/)) {
    if (line === '') break;
    if ((line.startsWith(' ') || line.startsWith('\t')) && fields.length) {
      const last = fields[fields.length - 1]!;
      last.value += ' ' + line.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    fields.push({ name: line.slice(0, colon).trim(), value: line.slice(colon + 1).trim() });
  }
  return fields;
}

const EIGHT_BIT = /[^\x00-\x7f]/;

/** How much of the header section the session keeps (CheckContext.headerSection: "up to 64 KiB"). */
export const SESSION_HEADER_CAP = 64 * 1024;

/** The verdict for the header section of one message. */
export function checkHeaders(ctx: CheckContext, opts: SyntaxOptions): Verdict {
  const section = ctx.headerSection;
  const fields = ctx.headers ?? (section !== undefined ? parseHeaderSection(section) : undefined);
  if (!fields) return NEXT; // nothing to look at (a session that does not buffer headers)

  if (section !== undefined) {
    const size = Buffer.byteLength(section, 'utf8');
    // The session keeps at most SESSION_HEADER_CAP bytes: a section that long was cut short.
    const truncated = size >= SESSION_HEADER_CAP;
    if (size > opts.maxHeaderSize || (truncated && opts.maxHeaderSize <= SESSION_HEADER_CAP)) {
      return reject(552, '5.3.4', `Message header section is ${truncated ? 'at least ' : ''}${size} bytes; the limit here is ${opts.maxHeaderSize}`);
    }
  }
  if (fields.length > opts.maxHeaders) {
    return reject(552, '5.3.4', `Message has ${fields.length} header fields; the limit here is ${opts.maxHeaders}`);
  }

  const counts = new Map<string, number>();
  for (const f of fields) {
    const name = f.name.toLowerCase();
    counts.set(name, (counts.get(name) ?? 0) + 1);
  }
  for (const name of AT_MOST_ONCE) {
    const n = counts.get(name) ?? 0;
    if (n > 1) return reject(554, '5.6.0', `Message has ${n} ${display(name)}: header fields; at most one is allowed (RFC 5322 §3.6)`);
  }
  if (!ctx.trusted && !ctx.authUser) {
    for (const name of ['from', 'date']) {
      if (!counts.has(name)) return reject(554, '5.6.0', `Message has no ${display(name)}: header field; exactly one is required (RFC 5322 §3.6)`);
    }
  }

  const eightBitOk = ctx.smtputf8 || opts.eightBitHeaders === 'allow' || (opts.eightBitHeaders === 'trusted' && ctx.trusted);
  if (!eightBitOk) {
    const bad = fields.find((f) => EIGHT_BIT.test(f.name) || EIGHT_BIT.test(f.value));
    if (bad) {
      return reject(554, '5.6.0', `Message header field ${bad.name}: contains 8-bit characters, but the client did not use SMTPUTF8; encode it as an RFC 2047 encoded-word`);
    }
    if (section !== undefined && EIGHT_BIT.test(section)) {
      return reject(554, '5.6.0', `Message header section contains 8-bit characters, but the client did not use SMTPUTF8; encode them as RFC 2047 encoded-words`);
    }
  }
  return NEXT;
}

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const opts: SyntaxOptions = {
    maxHeaders: o.integer('max_headers', 1000, 1),
    maxHeaderSize: o.size('max_header_size', 64 * 1024),
    heloFqdn: o.bool('helo_fqdn', true),
    eightBitHeaders: o.oneOf<EightBitPolicy>('eight_bit_headers', ['refuse', 'trusted', 'allow'], 'trusted'),
  };
  if (opts.maxHeaderSize > SESSION_HEADER_CAP) o.fail('max_header_size', `is larger than the ${SESSION_HEADER_CAP / 1024}K of header section the SMTP session keeps`, 'use at most "64K" (the default)');
  if (opts.maxHeaderSize < 1024) o.fail('max_header_size', `is ${opts.maxHeaderSize} bytes, too small for any real message`, 'use at least "1K"; the default is "64K"');
  o.rejectUnknown();
  return {
    name: 'syntax',
    phases: ['helo', 'data'],
    async run(phase, ctx) {
      if (phase === 'helo') {
        if (ctx.trusted || ctx.authUser || ctx.helo === undefined) return NEXT;
        const problem = heloProblem(ctx.helo, opts.heloFqdn);
        return problem ? reject(550, '5.7.1', `HELO/EHLO name ${problem} (RFC 5321 §4.1.1.1)`) : NEXT;
      }
      if (phase === 'data') return checkHeaders(ctx, opts);
      return NEXT;
    },
  };
}
