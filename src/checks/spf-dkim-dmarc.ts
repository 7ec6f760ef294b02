// SPF (at MAIL), DKIM, ARC and DMARC (at DATA) for inbound mail, through mailauth. The result
// goes into an Authentication-Results header (RFC 8601) and into the transaction notes for later
// checks (greylist) — never the connection's: one message's pass must not vouch for the next;
// mail is refused only when asked to (spf_reject, dmarc_policy = "honour").
//
// mailauth is loaded on first use, so a daemon that does not list this check never loads it,
// and only the parts we use: its index also loads BIMI/VMC (undici, an XML parser), ~11 MB RSS.
// The message is streamed into mailauth's DKIM verifier: it keeps the header section and hashes
// the body as it passes.
//
// mailauth 4.13 gets DMARC strict alignment (adkim=s / aspf=s) wrong: when the exact From domain
// does not match, it falls back to the relaxed (organizational-domain) match, so strict never
// fails. We give it only the exactly matching domains in that case (see dmarcFor).
//
// With arc_seal set, the check also adds an ARC set (RFC 8617) for instance i = chain length + 1,
// so that a receiver after us (a mailbox provider we forward to) can trust our Authentication-
// Results even when forwarding broke SPF. mailauth's own sealing (createSeal) does the signing:
// the verifier computes the relaxed body hash for the seal as the message streams past, and the
// ARC-Authentication-Results carries the same results as our Authentication-Results header.
// cv= is the verified chain's result: none (no chain, i=1), pass, or fail. A failed chain is
// sealed once with cv=fail so later hops see where it broke (RFC 8617 5.1.2); a chain whose
// newest seal already says cv=fail, or one too broken to number (i= gaps, duplicate sets), or
// one already 50 sets long, is left as it is.

import dns from 'node:dns';
import net from 'node:net';
import type { Readable } from 'node:stream';
import { domainToASCII } from 'node:url';
import type { AuthStatus, DMARCResult, SPFResult } from 'mailauth';
import type { AuthResult, Check, CheckContext, HeaderField, Phase, SpfResult, TransactionNotes, Verdict } from './check.js';
import { NEXT } from './check.js';
import { DEFAULT_SIGNED_HEADERS, readKey } from './dkim-sign.js';
import type { CheckEnv } from './registry.js';

/** The mailauth functions we use, from its own modules rather than its index (see above). */
interface Mailauth {
  spf: typeof import('mailauth').spf;
  dkimVerify: typeof import('mailauth').dkimVerify;
  dmarc: typeof import('mailauth').dmarc;
  arc: typeof import('mailauth').arc;
  createSeal: typeof import('mailauth/lib/arc/index.js').createSeal;
}

async function loadMailauth(): Promise<Mailauth> {
  const [spf, dkim, dmarc, arc] = await Promise.all([
    import('mailauth/lib/spf/index.js'),
    import('mailauth/lib/dkim/verify.js'),
    import('mailauth/lib/dmarc/index.js'),
    import('mailauth/lib/arc/index.js'),
  ]);
  return { spf: spf.spf, dkimVerify: dkim.dkimVerify, dmarc: dmarc.dmarc, arc: arc.arc, createSeal: arc.createSeal };
}

type Resolve = (name: string, rrtype: string) => Promise<string[][] | string[]>;

const PHASES: readonly Phase[] = ['mail', 'data'];

export interface SpfDkimDmarcOptions {
  spfReject: boolean;
  dmarcPolicy: 'honour' | 'report-only';
  checkTrusted: boolean;
  arc: boolean;
  minKeyBits: number;
  dnsServers: string[];
  /** Seal mail with ARC as this domain/selector; null: do not seal. */
  arcSeal: ArcSealKey | null;
}

export interface ArcSealKey {
  domain: string;
  selector: string;
  /** PEM text of an RSA key (RFC 8617 signs with rsa-sha256 only). */
  pem: string;
}

/** RFC 8617 4.2.1: instance numbers run from 1 to 50. */
const MAX_ARC_INSTANCE = 50;

/**
 * Header fields the ARC-Message-Signature covers: mailauth's ARC defaults (the DKIM list plus
 * DKIM-Signature and Delivered-To), so a later receiver can re-check the DKIM signatures we saw.
 */
const ARC_SIGNED_HEADERS = ['DKIM-Signature', 'Delivered-To', ...DEFAULT_SIGNED_HEADERS].join(':');

const DNS_NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?$/;

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const opts: SpfDkimDmarcOptions = {
    spfReject: o.bool('spf_reject', false),
    dmarcPolicy: o.oneOf('dmarc_policy', ['honour', 'report-only'] as const, 'report-only'),
    checkTrusted: o.bool('check_trusted', false),
    arc: o.bool('arc', true),
    minKeyBits: o.integer('min_key_bits', 1024, 512),
    dnsServers: o.stringList('dns_servers', []),
    arcSeal: o.has('arc_seal') ? arcSealFrom(o.sub('arc_seal'), env.config.configDir) : null,
  };
  if (opts.arcSeal && !opts.arc) {
    o.fail('arc', 'is false, but arc_seal is set: a seal has to say whether the chain it extends verified (cv=)', 'remove arc = false, or remove arc_seal');
  }
  let resolve: Resolve | undefined;
  try {
    resolve = makeResolver(opts.dnsServers);
  } catch (err) {
    return o.fail('dns_servers', `is not a list of DNS server addresses (${(err as Error).message})`, `write e.g. dns_servers = ["127.0.0.1", "[::1]:53", "192.0.2.53:5353"]`);
  }
  o.rejectUnknown();
  return new SpfDkimDmarc(env.config.hostname, opts, resolve);
}

/** arc_seal = { domain = "example.org", selector = "arc", key = "dkim/example.org.key" } */
function arcSealFrom(t: CheckEnv['options'], configDir: string | null): ArcSealKey {
  const example = 'write arc_seal = { domain = "example.org", selector = "arc", key = "dkim/example.org.key" }';
  const domain = t.string('domain') ?? t.fail('domain', 'is missing: the domain whose DNS publishes the sealing key', example);
  if (!DNS_NAME.test(domain)) t.fail('domain', `"${domain}" is not a domain name`, example);
  const selector = t.string('selector', 'tidemail');
  if (!DNS_NAME.test(selector) || selector.endsWith('.')) t.fail('selector', `"${selector}" is not a DNS label`, `use letters, digits and hyphens, e.g. selector = "arc"`);
  const file = t.string('key') ?? t.fail('key', 'is missing: the private key file to seal with', `${example} (make a key with: tidemail dkim keygen ${domain} --selector ${selector})`);
  t.rejectUnknown(); // a misspelt key first: it may be why the others look wrong
  // The same loading and checks as dkim-sign's keys (0600, PEM, RSA ≥ 1024 bits), errors at `key`.
  const key = readKey(domain, file, configDir, t, 'key');
  if (key.algorithm !== 'rsa-sha256') {
    t.fail('key', `${file} is an Ed25519 key; ARC (RFC 8617) seals with RSA only`, `make an RSA key: tidemail dkim keygen ${domain} --selector ${selector} (publish the record it prints)`);
  }
  return { domain: domain.replace(/\.$/, '').toLowerCase(), selector, pem: key.pem };
}

/** A resolver in the shape of dns.promises.resolve, aimed at `servers` (system servers when empty). */
function makeResolver(servers: string[]): Resolve {
  const r = new dns.promises.Resolver({ timeout: 5000, tries: 2 });
  if (servers.length) r.setServers(servers); // throws on a malformed address
  return (name, rrtype) => r.resolve(name, rrtype) as Promise<string[][] | string[]>;
}

/** The SPF answer kept from MAIL for the Authentication-Results header at DATA of the same transaction. */
interface SpfMemo {
  sender: string;
  result: SPFResult;
}

class SpfDkimDmarc implements Check {
  readonly name = 'spf-dkim-dmarc';
  readonly phases = PHASES;
  // Keyed by the transaction's notes object: gone with the transaction (RSET, next MAIL).
  private readonly spfByTransaction = new WeakMap<TransactionNotes, SpfMemo>();
  private mailauth: Promise<Mailauth> | null = null;

  constructor(
    private readonly hostname: string,
    private readonly opts: SpfDkimDmarcOptions,
    private readonly resolve: Resolve,
  ) {}

  private load(): Promise<Mailauth> {
    return (this.mailauth ??= loadMailauth());
  }

  async run(phase: Phase, ctx: CheckContext): Promise<Verdict> {
    // Our own users' mail is not "received from the Internet": DMARC would only get in the way.
    if ((ctx.trusted || ctx.authUser) && !this.opts.checkTrusted) return NEXT;
    if (phase === 'mail') return this.atMail(ctx);
    if (phase === 'data') return this.atData(ctx);
    return NEXT;
  }

  private async spfFor(ctx: CheckContext): Promise<SPFResult> {
    const sender = ctx.sender ?? '';
    const tx = ctx.transaction;
    const memo = tx && this.spfByTransaction.get(tx);
    if (memo && memo.sender === sender) return memo.result;
    const { spf } = await this.load();
    // mailauth checks postmaster@HELO for the null sender (RFC 7208 2.4); an address literal
    // HELO is written in brackets, as mailauth's own authenticate() does.
    const helo = ctx.helo && net.isIP(ctx.helo) ? `[${ctx.helo}]` : ctx.helo;
    const result = await spf({ sender: sender || undefined, ip: ctx.clientAddress, helo: helo || `[${ctx.clientAddress}]`, mta: this.hostname, resolver: this.resolve });
    if (tx) {
      this.spfByTransaction.set(tx, { sender, result });
      tx.spf = spfResultOf(result.status);
    }
    return result;
  }

  private async atMail(ctx: CheckContext): Promise<Verdict> {
    const result = await this.spfFor(ctx);
    if (this.opts.spfReject && result.status.result === 'fail') {
      // RFC 7372: 5.7.23 is "SPF validation failed".
      return { action: 'reject', code: 550, enhanced: '5.7.23', text: `SPF check failed: ${result.domain} does not designate ${ctx.clientAddress} as permitted sender` };
    }
    return NEXT;
  }

  private async atData(ctx: CheckContext): Promise<Verdict> {
    if (!ctx.body) throw new Error('the message body is not available to the check');
    const ma = await this.load();
    const spfResult = await this.spfFor(ctx);
    const sealKey = this.opts.arcSeal;
    const dkim = await ma.dkimVerify(ctx.body() as Readable, {
      resolver: this.resolve,
      sender: ctx.sender || undefined,
      minBitLength: this.opts.minKeyBits,
      // A fresh object per message: mailauth writes the body hash for the seal into it.
      seal: sealKey ? { signingDomain: sealKey.domain, selector: sealKey.selector, privateKey: sealKey.pem, algorithm: 'rsa-sha256' } : undefined,
    });
    const parts: string[] = dkim.results.map((r) => r.info);
    const tx = ctx.transaction;
    if (tx) tx.dkim = dkim.results.some((r) => r.status.result === 'pass') ? 'pass' : authResultOf(dkim.results[0]?.status.result ?? 'none');
    parts.push(spfResult.info);

    let arcResult: Awaited<ReturnType<Mailauth['arc']>> | undefined;
    if (this.opts.arc && dkim.arc) {
      arcResult = await ma.arc(dkim.arc as unknown as Parameters<Mailauth['arc']>[0], { resolver: this.resolve, minBitLength: this.opts.minKeyBits });
      if (arcResult.info) parts.push(arcResult.info);
      if (tx) tx.arc = authResultOf(arcResult.status.result);
    }

    let verdict: Verdict = NEXT;
    // DMARC needs exactly one From: address (RFC 7489 6.6.1); mailauth reports nothing otherwise.
    if (dkim.headerFrom?.length === 1) {
      const dmarc = await dmarcFor(ma, this.resolve, dkim.headerFrom, spfResult, dkim.results, arcResult);
      if (dmarc) {
        if (tx) tx.dmarc = authResultOf(dmarc.status.result);
        let info = dmarc.info;
        if (dmarc.status.result === 'fail' && this.opts.dmarcPolicy === 'honour') {
          const policy = appliedPolicy(dmarc);
          if (policy === 'reject') {
            verdict = { action: 'reject', code: 550, enhanced: '5.7.1', text: `DMARC policy of ${dmarc.domain} says reject` };
          } else if (policy === 'quarantine') {
            // We have no quarantine; accept and say so for the mailbox's filters.
            info += ' policy.dmarc=quarantine';
            if (tx) tx.dmarcQuarantine = true;
          }
        }
        parts.push(info);
      }
    }
    if (verdict.action === 'reject') return verdict;
    const results = `${this.hostname};\r\n ${parts.join(';\r\n ')}`;
    const header: HeaderField = { name: 'Authentication-Results', value: results };
    const arcSet = arcResult && dkim.seal ? await this.seal(ma, dkim, arcResult, results) : [];
    return { action: 'next', addHeaders: [...arcSet, header] };
  }

  /**
   * The ARC set for this hop, ARC-Seal first (mailauth's order, and where RFC 8617's examples put
   * it), or none when the chain is not to be extended (see the top of the file).
   */
  private async seal(
    ma: Mailauth,
    dkim: Awaited<ReturnType<Mailauth['dkimVerify']>>,
    arcResult: Awaited<ReturnType<Mailauth['arc']>>,
    authResults: string,
  ): Promise<HeaderField[]> {
    const cv = arcResult.status.result;
    if (cv !== 'none' && cv !== 'pass' && !(cv === 'fail' && (arcResult.status as { shouldSeal?: boolean }).shouldSeal)) return [];
    const i = (Number(arcResult.i) || 0) + 1;
    if (i > MAX_ARC_INSTANCE) return [];
    const { headers } = await ma.createSeal(false, {
      headers: dkim.headers,
      arc: dkim.arc,
      seal: { ...dkim.seal, i, cv, authResults, signTime: new Date(), headerList: ARC_SIGNED_HEADERS },
    });
    const fields = headers.map((line): HeaderField | null => {
      const colon = typeof line === 'string' ? line.indexOf(':') : -1;
      return colon > 0 ? { name: line.slice(0, colon), value: line.slice(colon + 1).trimStart().replace(/\r\n$/, '') } : null;
    });
    const expected = ['arc-seal', 'arc-message-signature', 'arc-authentication-results'];
    if (fields.length !== 3 || fields.some((f, n) => f?.name.toLowerCase() !== expected[n])) {
      // mailauth leaves out the ARC-Message-Signature when signing fails; a broken set is worse than none.
      throw new Error(`ARC sealing as ${dkim.seal!.signingDomain} failed: mailauth returned ${fields.map((f) => f?.name ?? 'nothing').join(', ')}`);
    }
    return fields as HeaderField[];
  }
}

function spfResultOf(status: AuthStatus): SpfResult {
  const r = status.result;
  if (r === 'temperr') return 'temperror';
  if (r === 'pass' || r === 'fail' || r === 'softfail' || r === 'neutral' || r === 'none' || r === 'temperror' || r === 'permerror') return r;
  return 'neutral';
}

const AUTH_RESULTS: readonly string[] = ['pass', 'fail', 'softfail', 'neutral', 'none', 'policy', 'temperror', 'permerror'];

/** mailauth's result word as an RFC 8601 keyword (its 'temperr' spelling too); anything else is neutral. */
function authResultOf(r: string): AuthResult {
  if (r === 'temperr') return 'temperror';
  return AUTH_RESULTS.includes(r) ? (r as AuthResult) : 'neutral';
}

/** The policy to apply to a failing message, with pct= sampling (RFC 7489 6.6.4). */
function appliedPolicy(d: DMARCResult): 'none' | 'quarantine' | 'reject' {
  const policy = (d.policy ?? 'none').toLowerCase();
  const pct = typeof d.pct === 'number' ? d.pct : 100;
  const sampled = pct >= 100 || Math.random() * 100 < pct;
  if (policy === 'reject') return sampled ? 'reject' : 'quarantine';
  if (policy === 'quarantine') return sampled ? 'quarantine' : 'none';
  return 'none';
}

function bareDomain(d: string): string {
  const plain = d.trim().toLowerCase().replace(/\.$/, '');
  return domainToASCII(plain) || plain;
}

/**
 * DMARC through mailauth, with strict alignment done right: when the record says adkim=s or
 * aspf=s, the check is asked again with only the domains that equal the From: domain exactly.
 */
async function dmarcFor(
  ma: Mailauth,
  resolver: Resolve,
  headerFrom: string[],
  spf: SPFResult,
  dkimResults: Awaited<ReturnType<Mailauth['dkimVerify']>>['results'],
  arcResult: Awaited<ReturnType<Mailauth['arc']>> | undefined,
): Promise<DMARCResult | false> {
  const spfDomains = spf.status.result === 'pass' && spf.domain ? [spf.domain] : [];
  const dkimDomains = dkimResults
    .filter((r) => r.status.result === 'pass')
    .map((r) => ({ id: r.id, domain: r.signingDomain, aligned: r.status.aligned, underSized: r.status.underSized }));
  const ask = (s: string[], d: typeof dkimDomains) =>
    ma.dmarc({ headerFrom, spfDomains: s, dkimDomains: d, arcResult, resolver } as Parameters<Mailauth['dmarc']>[0]);
  const first = await ask(spfDomains, dkimDomains);
  if (!first || first.status.result !== 'pass') return first;
  const strictDkim = first.alignment?.dkim?.strict;
  const strictSpf = first.alignment?.spf?.strict;
  if (!strictDkim && !strictSpf) return first;
  const from = bareDomain(headerFrom[0]!.slice(headerFrom[0]!.lastIndexOf('@') + 1));
  const exact = (d: string) => bareDomain(d) === from;
  return ask(strictSpf ? spfDomains.filter(exact) : spfDomains, strictDkim ? dkimDomains.filter((d) => exact(d.domain)) : dkimDomains);
}
