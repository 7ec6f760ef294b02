// MAIL FROM and RCPT TO: the path and its ESMTP parameters (RFC 5321 §4.1.2, SIZE RFC 1870,
// BODY RFC 6152, SMTPUTF8 RFC 6531, RET/ENVID/NOTIFY/ORCPT RFC 3461), with the syntax rules
// smtp-server applied, so that what was refused before is refused now with the same codes.

import { isIPv4, isIPv6 } from 'node:net';
import { domainToUnicode } from 'node:url';
import { hasInvisible } from './peer-text.js';
import { replyLine } from './reply-writer.js';
import type { EnvelopeAddress } from './types.js';

const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const SOURCE_ROUTE = /^@[^\s,:@]+(?:,@[^\s,:@]+)*:/;
const DOMAIN_CHARS = /^[a-zA-Z0-9\u0080-\uffff.-]+$/;
const XTEXT = /\+([0-9A-F]{2})/g;
const SPACES = /\s+/;
const DIGITS = /^\d{1,20}$/;
const ORCPT = /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+;./i;

const MAIL_VALUE_PARAMS = ['BODY', 'SIZE', 'RET', 'ENVID'];
const RCPT_VALUE_PARAMS = ['NOTIFY', 'ORCPT'];
const NOTIFY_VALUES = new Set(['NEVER', 'SUCCESS', 'FAILURE', 'DELAY']);

export type Parsed = { ok: EnvelopeAddress } | { error: string };

const fail = (code: number, text: string): Parsed => ({ error: replyLine(code, text) });

/** "MAIL FROM:<a@b> SIZE=10" → the address and parameters, or the reply that refuses the line. */
export function parseMailFrom(line: string, maxSize: number): Parsed {
  const p = parsePath(line, 'MAIL FROM', false);
  if (!p) return fail(501, '5.1.7 Error: Bad sender address syntax');
  const bad = badParams(p, MAIL_VALUE_PARAMS);
  if (bad) return bad;
  const a = p.args;
  if (a.SIZE !== undefined) {
    if (!DIGITS.test(a.SIZE as string)) return fail(501, 'Error: Bad message size syntax');
    if (maxSize && Number(a.SIZE) > maxSize) return fail(552, `5.3.4 Error: message exceeds fixed maximum message size ${maxSize}`);
  }
  if (a.BODY !== undefined) {
    const body = (a.BODY as string).toLowerCase();
    if (body !== '7bit' && body !== '8bitmime') return fail(501, 'Invalid BODY parameter value. Must be 7BIT or 8BITMIME');
  }
  if (a.SMTPUTF8 !== undefined && a.SMTPUTF8 !== true) return fail(501, 'Invalid SMTPUTF8 parameter. This flag does not accept a value');
  if (a.RET !== undefined) {
    const ret = (a.RET as string).toUpperCase();
    if (ret !== 'FULL' && ret !== 'HDRS') return fail(501, 'Invalid RET parameter value. Must be FULL or HDRS');
  }
  return { ok: p };
}

export function parseRcptTo(line: string): Parsed {
  const p = parsePath(line, 'RCPT TO', true);
  if (!p || !p.address) return fail(501, '5.1.3 Error: Bad recipient address syntax');
  const bad = badParams(p, RCPT_VALUE_PARAMS);
  if (bad) return bad;
  const notify = p.args.NOTIFY;
  if (notify !== undefined) {
    const values = (notify as string).toUpperCase().split(',');
    if (!values.every((v) => NOTIFY_VALUES.has(v))) return fail(501, 'Error: NOTIFY parameter must be NEVER, SUCCESS, FAILURE, or DELAY');
    if (values.length > 1 && values.includes('NEVER')) return fail(501, 'Error: NOTIFY=NEVER cannot be combined with other values');
  }
  if (p.args.ORCPT !== undefined && !ORCPT.test(p.args.ORCPT as string)) return fail(501, 'Error: Bad ORCPT parameter syntax');
  return { ok: p };
}

type WithDuplicate = EnvelopeAddress & { duplicate?: string };

function badParams(p: WithDuplicate, needValue: readonly string[]): Parsed | null {
  if (p.duplicate) return fail(501, `Error: duplicate ${p.duplicate} parameter`);
  for (const k of needValue) {
    const v = p.args[k];
    if (v !== undefined && (v === true || !v)) return fail(501, `Error: ${k} parameter requires a value`);
  }
  return null;
}

/** The path and parameters after "MAIL FROM:" / "RCPT TO:"; null when the syntax is bad. */
function parsePath(line: string, name: string, rcpt: boolean): WithDuplicate | null {
  const colon = line.indexOf(':');
  if (colon === -1 || line.slice(0, colon).trim().toUpperCase() !== name) return null;
  const parts = line.slice(colon + 1).trim().split(SPACES);
  let address = parts[0] ?? '';
  if (address.length < 2 || address[0] !== '<' || address[address.length - 1] !== '>') return null;
  address = address.slice(1, -1);
  if (address.includes('<') || address.includes('>')) return null;
  address = address.replace(SOURCE_ROUTE, ''); // RFC 5321 §4.1.2: accepted and ignored
  const out: WithDuplicate = { address, args: {} };
  for (let i = 1; i < parts.length; i++) {
    const param = parts[i]!;
    const eq = param.indexOf('=');
    const key = (eq === -1 ? param : param.slice(0, eq)).toUpperCase();
    if (!key.trim()) continue;
    let value: string | true = eq === -1 ? true : param.slice(eq + 1) || true;
    if (value !== true) {
      value = value.replace(XTEXT, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)));
      if (CONTROL.test(value)) return null; // CR LF smuggled in as xtext
    }
    if (key in out.args) out.duplicate = key;
    out.args[key] = value;
  }
  if (!address) return out;
  // Controls and invisible format characters (bidi overrides, soft hyphens…): peer-text.ts.
  if (hasInvisible(address)) return null;
  if (rcpt && address.toLowerCase() === 'postmaster') return out; // RFC 5321 §4.1.1.3
  const normal = normalAddress(address);
  if (!normal) return null;
  out.address = normal;
  return out;
}

/** local@domain checked the way smtp-server checked it; IDN domains in U-labels. */
function normalAddress(address: string): string | null {
  const at = address.indexOf('@');
  if (at <= 0 || at !== address.lastIndexOf('@') || at === address.length - 1) return null;
  if (address.length > 253) return null; // RFC 5321 §4.5.3.1.3: the path is at most 256 octets
  const local = address.slice(0, at);
  let domain = address.slice(at + 1);
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return null;
  // A legal atom, but as an argument (an MDA's `-f {sender}`, a .forward pipe) it is an option:
  // refused as Postfix refuses it by default (allow_min_user = no).
  if (local.startsWith('-')) return null;
  if (domain.startsWith('[') && domain.endsWith(']')) {
    const ip = domain.slice(1, -1);
    if (ip.slice(0, 5).toUpperCase() === 'IPV6:') return isIPv6(ip.slice(5)) ? `${local}@[IPv6:${ip.slice(5).toLowerCase()}]` : null;
    return isIPv4(ip) ? address : null;
  }
  if (domain.startsWith('.') || domain.endsWith('.') || domain.includes('..') || domain.includes('.-') || domain.includes('-.') || !DOMAIN_CHARS.test(domain)) return null;
  if (domain.toLowerCase().includes('xn--')) {
    domain = domainToUnicode(domain);
    if (!domain) return null;
  }
  return `${local}@${domain}`;
}
