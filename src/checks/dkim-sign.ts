// DKIM-signs mail that our own users send (trusted networks or SMTP AUTH) when the From: domain
// has a key, so that receivers can check it with DKIM and DMARC. The signature is returned as an
// added header; the intake pipeline signs last and puts it above every other header.
//
// Keys are read once, at daemon start (while we may still be root), and must be private files
// (mode 0600). mailauth is loaded on the first message to sign.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { Check, CheckContext, Phase, Verdict } from './check.js';
import { NEXT } from './check.js';
import type { CheckEnv } from './registry.js';

// mailauth's signer module only: its index also loads BIMI/VMC code (~11 MB RSS) we never use.
type Signer = typeof import('mailauth/lib/dkim/sign.js');

/**
 * Header fields signed by default (RFC 6376 5.4.1's recommendations). From is required; fields a
 * message does not have are left out of h=.
 */
export const DEFAULT_SIGNED_HEADERS = [
  'From', 'Sender', 'Reply-To', 'Subject', 'Date', 'Message-ID', 'To', 'Cc',
  'MIME-Version', 'Content-Type', 'Content-Transfer-Encoding', 'In-Reply-To', 'References',
  'List-Id', 'List-Help', 'List-Unsubscribe', 'List-Unsubscribe-Post', 'List-Post', 'List-Owner', 'List-Archive',
];

export interface SigningKey {
  domain: string;
  /** PEM text (mailauth wants the key material, not a KeyObject). */
  pem: string;
  algorithm: 'rsa-sha256' | 'ed25519-sha256';
}

const PHASES: readonly Phase[] = ['data'];

export function createCheck(env: CheckEnv): Check {
  const o = env.options;
  const selector = o.string('selector', 'tidemail');
  if (!/^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(selector)) {
    o.fail('selector', `"${selector}" is not a DNS label`, `use letters, digits and hyphens, e.g. selector = "tidemail"`);
  }
  const headers = o.stringList('headers', DEFAULT_SIGNED_HEADERS);
  if (!headers.some((h) => h.toLowerCase() === 'from')) {
    o.fail('headers', `does not include From, which DKIM requires to be signed (RFC 6376 5.4)`, `add "From" to the list`);
  }
  if (headers.some((h) => !/^[\x21-\x39\x3b-\x7e]+$/.test(h))) {
    o.fail('headers', `contains something that is not a header field name`, `list plain names, e.g. headers = ["From", "To", "Subject", "Date"]`);
  }
  const keysTable = o.sub('keys');
  const keys = new Map<string, SigningKey>();
  for (const domain of Object.keys(keysTable.table)) {
    const file = keysTable.string(domain)!;
    keys.set(domain.toLowerCase().replace(/\.$/, ''), readKey(domain, file, env.config.configDir, keysTable));
  }
  if (!keys.size) {
    o.fail('keys', `names no keys, so nothing would be signed`, `add keys = { "example.org" = "dkim/example.org.key" } (make one with: tidemail dkim keygen example.org)`);
  }
  o.rejectUnknown();
  return new DkimSign(keys, selector, headers);
}

/**
 * Reads and checks one private key; every problem is a config error at the line of `optionKey`
 * (the domain's entry in keys = {…} here; spf-dkim-dmarc's arc_seal uses it for its `key`).
 */
export function readKey(domain: string, file: string, configDir: string | null, at: CheckEnv['options'], optionKey = domain): SigningKey {
  if (!path.isAbsolute(file) && !configDir) {
    at.fail(optionKey, `is a relative path, but there is no config directory to resolve it against`, `write the absolute path of the key file`);
  }
  const full = path.resolve(configDir ?? '/', file);
  let st: fs.Stats;
  try {
    st = fs.statSync(full);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') at.fail(optionKey, `key file ${full} does not exist`, `make it with: tidemail dkim keygen ${domain} --out ${path.dirname(full)}`);
    at.fail(optionKey, `key file ${full} cannot be read (${e.code ?? e.message})`, `check the path and its permissions`);
  }
  if (st.mode & 0o077) {
    const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
    at.fail(optionKey, `key file ${full} has mode ${mode}: a private key must not be readable by group or others`, `chmod 600 ${full}`);
  }
  let pem: string;
  let key: crypto.KeyObject;
  try {
    pem = fs.readFileSync(full, 'utf8');
    key = crypto.createPrivateKey(pem);
  } catch (err) {
    at.fail(optionKey, `key file ${full} is not a PEM private key (${(err as Error).message})`, `make a new one with: tidemail dkim keygen ${domain} --force`);
  }
  const type = key.asymmetricKeyType;
  if (type === 'rsa') {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    // RFC 8301: verifiers must not accept keys under 1024 bits.
    if (bits < 1024) at.fail(optionKey, `key file ${full} is a ${bits}-bit RSA key; receivers ignore keys under 1024 bits`, `make a 2048-bit key: tidemail dkim keygen ${domain} --force`);
    return { domain, pem, algorithm: 'rsa-sha256' };
  }
  if (type === 'ed25519') return { domain, pem, algorithm: 'ed25519-sha256' };
  return at.fail(optionKey, `key file ${full} is a ${type} key; DKIM signs with RSA or Ed25519`, `make a new one with: tidemail dkim keygen ${domain} --force`);
}

/** The domains of the addresses in a From: value (quoted strings and comments dropped). */
export function fromDomains(value: string): string[] {
  const plain = value.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\((?:[^()\\]|\\.)*\)/g, ' ');
  const out: string[] = [];
  for (const m of plain.matchAll(/@\s*([^\s<>,;:@"()[\]]+)/g)) out.push(m[1]!.toLowerCase().replace(/\.$/, ''));
  return [...new Set(out)];
}

class DkimSign implements Check {
  readonly name = 'dkim-sign';
  readonly phases = PHASES;
  private signer: Promise<Signer> | null = null;

  constructor(
    private readonly keys: ReadonlyMap<string, SigningKey>,
    private readonly selector: string,
    private readonly headers: readonly string[],
  ) {}

  /** The key for a From: domain: its own, or its closest parent's (which still aligns for DMARC). */
  keyFor(domain: string): SigningKey | undefined {
    for (let d = domain; d.includes('.'); d = d.slice(d.indexOf('.') + 1)) {
      const key = this.keys.get(d);
      if (key) return key;
    }
    return undefined;
  }

  /** Cron's and local users' mail (sendmail, picked up from the maildrop) is signed too. */
  readonly localSubmissions = true;
  readonly signsMessage = true;

  async run(_phase: Phase, ctx: CheckContext): Promise<Verdict> {
    // Only our own users' mail: signing relayed strangers' mail would vouch for it.
    if (!ctx.trusted && !ctx.authUser) return NEXT;
    const from = (ctx.headers ?? []).filter((h) => h.name.toLowerCase() === 'from');
    if (from.length !== 1) return NEXT; // none, or a message DMARC will refuse anyway
    const domains = fromDomains(from[0]!.value);
    if (domains.length !== 1) return NEXT;
    const key = this.keyFor(domains[0]!);
    if (!key) return NEXT;
    if (!ctx.body) throw new Error('the message body is not available to the check');
    const { dkimSign } = await (this.signer ??= import('mailauth/lib/dkim/sign.js'));
    // mailauth 4.13 reads the keys from signatureData only (its typings say otherwise), and the
    // header list as one colon-separated string (an array silently means "the default list").
    const signature = { signingDomain: key.domain, selector: this.selector, privateKey: key.pem, algorithm: key.algorithm, canonicalization: 'relaxed/relaxed' };
    const result = await dkimSign(ctx.body() as Readable, {
      ...signature,
      // Without signTime mailauth reads the clock twice, for the hashed t= and for the written
      // one; a second boundary between the two gives a signature that never verifies (issue 15 §7).
      signTime: new Date(),
      signatureData: [signature],
      headerList: this.headers.join(':') as unknown as string[],
    });
    if (result.errors.length) {
      const e = result.errors[0] as unknown as { err?: Error };
      throw new Error(`DKIM signing for ${key.domain} failed: ${e.err?.message ?? String(result.errors[0])}`);
    }
    const sig = result.signatures.replace(/\r\n$/, '');
    const colon = sig.indexOf(':');
    if (colon < 0 || sig.slice(0, colon).toLowerCase() !== 'dkim-signature') throw new Error('DKIM signing produced no signature');
    return { action: 'next', addHeaders: [{ name: 'DKIM-Signature', value: sig.slice(colon + 1).trimStart() }] };
  }
}
