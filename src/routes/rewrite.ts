// Address rewriting per route, so mail from cron, root or a LAN box leaves with a real address
// the provider accepts (masqmail's map_return_path / map_h_from_addresses). Only *local*
// addresses are rewritten — those in a local domain or without a domain — so forwarded mail
// keeps its author. The header rewrite is a stream transform over the header section only;
// the body passes through untouched and is never held in memory.

import { Transform, type TransformCallback } from 'node:stream';
import { domainOf, localPartOf } from '../message/address.js';
import { parseAddressList } from '../message/address-list.js';
import type { RewriteSpec } from './profile.js';

export interface RewriteContext {
  spec: RewriteSpec;
  localDomains: ReadonlySet<string>;
}

export function isLocalAddress(address: string, localDomains: ReadonlySet<string>): boolean {
  const d = domainOf(address);
  return d === '' || localDomains.has(d);
}

/** The external address for a local one, or null to leave it. */
function mapped(address: string, ctx: RewriteContext, fallback: string | undefined): string | null {
  if (!isLocalAddress(address, ctx.localDomains)) return null;
  const m = ctx.spec.map[address.toLowerCase()] ?? ctx.spec.map[localPartOf(address).toLowerCase()];
  return m ?? fallback ?? null;
}

export function rewriteEnvelopeSender(sender: string, ctx: RewriteContext): string {
  if (!sender) return sender; // the null sender stays null
  return mapped(sender, ctx, ctx.spec.envelopeFrom) ?? sender;
}

export function needsHeaderRewrite(spec: RewriteSpec): boolean {
  return spec.headerFrom !== undefined || Object.keys(spec.map).length > 0;
}

const REWRITTEN = new Set(['from', 'sender', 'reply-to']);
const MAX_HEADER = 256 * 1024;

function formatAddress(name: string, address: string): string {
  if (!name) return `<${address}>`;
  const safe = /^[\w !#$%&'*+\-/=?^`{|}~.]*$/.test(name) && !/^\s|\s$/.test(name) ? name : JSON.stringify(name);
  return `${safe} <${address}>`;
}

/** Rewrites one header field's raw text ("From: …\r\n\t…"); unchanged fields come back as-is. */
export function rewriteField(raw: string, ctx: RewriteContext): string {
  const colon = raw.indexOf(':');
  const name = raw.slice(0, colon);
  if (!REWRITTEN.has(name.trim().toLowerCase())) return raw;
  const value = raw.slice(colon + 1).replace(/\r\n[ \t]/g, ' ').trim();
  let changed = false;
  const out = parseAddressList(value).map((a) => {
    if (!a) return null;
    const m = mapped(a.address, ctx, ctx.spec.headerFrom);
    if (m && m !== a.address) changed = true;
    return formatAddress(a.name, m ?? a.address);
  });
  if (!changed || out.includes(null)) return raw; // groups or odd syntax: leave the field alone
  return `${name}: ${out.join(', ')}\r\n`;
}

export class HeaderRewriter extends Transform {
  private head: Buffer[] = [];
  private headLength = 0;
  private passing = false;

  constructor(private readonly ctx: RewriteContext) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.passing) return cb(null, chunk);
    this.head.push(chunk);
    this.headLength += chunk.length;
    const all = Buffer.concat(this.head, this.headLength);
    const end = all.indexOf('\r\n\r\n');
    if (end < 0 && this.headLength < MAX_HEADER) {
      this.head = [all];
      return cb();
    }
    this.passing = true;
    this.head = [];
    if (end < 0) return cb(null, all); // absurd header: pass through unchanged
    cb(null, Buffer.concat([Buffer.from(this.rewriteHeader(all.subarray(0, end + 2).toString('utf8')), 'utf8'), all.subarray(end + 2)]));
  }

  override _flush(cb: TransformCallback): void {
    if (!this.passing && this.headLength) {
      const all = Buffer.concat(this.head, this.headLength);
      return cb(null, Buffer.from(this.rewriteHeader(all.toString('utf8')), 'utf8'));
    }
    cb();
  }

  private rewriteHeader(text: string): string {
    // Split into fields: a line starting with whitespace continues the previous field.
    const fields = text.split(/\r\n(?![ \t])/).filter((f, i, a) => f !== '' || i < a.length - 1);
    return fields.map((f) => rewriteField(f.endsWith('\r\n') ? f : f + '\r\n', this.ctx)).join('');
  }
}
