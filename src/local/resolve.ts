// Local addresses → delivery targets. The order, for user[+ext]@domain:
//
//   1. virtual map of the domain: "user+ext", then "user", then "*" (Postfix virtual(5));
//      a value is a local name, an address, "@other.domain" (keep the local part), or a
//      comma-separated list of those. A miss in a virtual-only domain is "no such user",
//      except postmaster (RFC 5321 4.5.1), which falls through to the local postmaster.
//   2. for "user+ext", then "user" (recipient delimiter "+", as Postfix):
//      aliases → user map (local part → system user) → system user (+ ~/.forward if on).
//   3. postmaster with no alias and no user is root's; root with no passwd entry is uid 0.
//
// Alias expansion follows aliases(5): targets that are local addresses are expanded again;
// a target equal to the alias name ("alice: alice, bob") or written \user is that user's
// mailbox, not expanded again (no .forward either); a chain that comes back to a name it has
// passed is a loop; 20 levels at most. :include: files are read at resolve time, like sendmail;
// their pipes and files are honoured only when the file is owned by root or by us and is not
// writable by group or others — the same rule as for the aliases table itself (aliases.ts).
// Pipes and files from the aliases file run as the daemon's user (Postfix's default_privs);
// those from a ~/.forward carry their owner and run only as that user (forward.ts).
// An address whose local part reads as a target ("/path@x", "|cmd@x") is never one: it fails. If an alias "owner-foo" exists, errors for list foo go there
// (sendmail's convention; only the first list reached from the address counts).
// "foo-request" is an ordinary alias name.
//
// A member that cannot be resolved (an unknown user inside a list) does not sink the whole
// list: it is reported in `failed` for a bounce, and the rest is delivered. An address whose
// expansion leaves nothing to deliver to is a permanent error.
//
// Source-routed forms (a%b@local, a!b@local, @relay:a@local) are refused: they would make us
// an open relay for old-style routing.

import { domainOf, localPartOf, nonMailboxReason } from '../message/address.js';
import { TidemailError } from '../errors.js';
import { log } from '../log/log.js';
import { AliasTable, classifyTarget, readTargetFile } from './aliases.js';
import { readForwardFile } from './forward.js';
import { cachedUserLookup, type SystemUser } from './users.js';
import type { TargetSource } from '../config/schema.js';

export type LocalTarget =
  /** A system (or mapped) user's mailbox. */
  | { kind: 'mailbox'; user: string; uid: number; gid: number; home: string }
  /**
   * Append to a file (mbox format). `user` and `uid` are set when the target came from that
   * user's ~/.forward: it may only run with that user's rights (local.ts refuses it otherwise).
   * Without them (aliases file, :include:), it runs as the delivering process (the daemon's user).
   */
  | { kind: 'file'; path: string; user?: string; uid?: number }
  /** Pipe to a shell command; `user` and `uid` as for files. */
  | { kind: 'pipe'; command: string; user?: string; uid?: number }
  /** An external address: goes back through the routes. */
  | { kind: 'remote'; address: string };

export interface Resolution {
  /** Final targets, deduplicated. */
  targets: LocalTarget[];
  /** Where errors go, from the owner-LIST convention (owner-foo for alias foo), if any. */
  errorsTo?: string;
  /** Members of the expansion that could not be resolved (to bounce); the targets still get the mail. */
  failed?: { address: string; reason: string }[];
}

export interface LocalResolverOptions {
  /** Local domains (lower-case). */
  domains: string[];
  hostname: string;
  /** aliases(5) text file; newaliases compiles it to compiledAliasesPath(file). */
  aliasesFile: string | null;
  /** Local part → system user name (e.g. {"info": "alice"}). */
  users?: Record<string, string>;
  /** Domain → { local part or "*" : "user" | "ext@address" | "@domain" }. */
  virtual?: Record<string, Record<string, string>>;
  /** Honour ~/.forward. */
  forward: boolean;
  /** System users by login name; default: getent/passwd, cached 30 s (users.ts). */
  lookupUser?: (name: string) => SystemUser | null;
  /** Where pipes and files may come from (Postfix's allow_mail_to_commands/files); default all three. */
  allowCommands?: readonly TargetSource[];
  allowFiles?: readonly TargetSource[];
  /** Reads ~user/.forward; default forward.ts with our own rights (the root helper's when it runs: src/privsep). */
  readForward?: (user: SystemUser) => Promise<import('./forward.js').ForwardFile>;
}

/** An address that cannot be resolved now; `permanent` says whether retrying can help. */
export class LocalResolveError extends TidemailError {
  override name = 'LocalResolveError';
  /** true: loops, nesting, nothing left to deliver to (5xx); false: unreadable files, bad include syntax (4xx). */
  readonly permanent: boolean;
  /**
   * The enhanced status (RFC 3463): 5.1.1 when every member is an unknown user (a mistyped
   * alias target is a bad mailbox, not a routing loop), 5.4.6 for the other permanent errors.
   */
  readonly status: string;
  constructor(message: string, permanent: boolean, options?: ErrorOptions & { status?: string }) {
    super(message, options);
    this.permanent = permanent;
    this.status = options?.status ?? (permanent ? '5.4.6' : '4.3.0');
  }
}

const MAX_DEPTH = 20;

/** State of one resolve() call. */
class Walk {
  readonly targets = new Map<string, LocalTarget>();
  readonly failed: { address: string; reason: string }[] = [];
  errorsTo: string | undefined;
  listSeen = false;

  add(t: LocalTarget): void {
    let key: string;
    switch (t.kind) {
      case 'mailbox':
        key = `mailbox ${t.user}`;
        break;
      case 'file':
        key = `file ${t.user ?? ''} ${t.path}`;
        break;
      case 'pipe':
        key = `pipe ${t.user ?? ''} ${t.command}`;
        break;
      case 'remote':
        key = `remote ${localPartOf(t.address)}@${normDomain(domainOf(t.address))}`;
        break;
      default: {
        const never: never = t;
        throw new Error(`unknown target ${JSON.stringify(never)}`);
      }
    }
    if (!this.targets.has(key)) this.targets.set(key, t);
  }

  private readonly failedAddresses = new Set<string>();

  fail(address: string, reason: string): void {
    // A Set, not failed.some(): resolving a list of 40,000 unknown members took 9.5 s (0.65 s now).
    if (this.failedAddresses.has(address)) return;
    this.failedAddresses.add(address);
    this.failed.push({ address, reason });
  }
}

/** How the targets of one alias, include file or .forward are read. */
interface Context {
  /** Names that mean "this user's mailbox" here (the alias name; the .forward owner). */
  self: Set<string>;
  chain: string[];
  /** Pipes and files: allowed, or why not. */
  programs: true | string;
  includes: boolean;
  /** Set for .forward targets: the user whose rights pipes and files need. */
  runAs?: SystemUser;
  /** Which file these targets were written in ([local] allow_mail_to_commands/files). */
  source: TargetSource;
}

const ALL_SOURCES: readonly TargetSource[] = ['alias', 'include', 'forward'];

const normDomain = (d: string) => d.toLowerCase().replace(/\.$/, '');

/** a%b@x, a!b@x, @relay:a@x: old-style source routes. */
function isSourceRouted(address: string): boolean {
  return address.startsWith('@') || /[%!@:]/.test(localPartOf(address));
}

export class LocalResolver {
  private readonly domains: Set<string>;
  private readonly hostname: string;
  private readonly users = new Map<string, string>();
  private readonly virtual = new Map<string, Map<string, string>>();
  private readonly forward: boolean;
  private readonly lookupUser: (name: string) => SystemUser | null;
  private readonly readForward: (user: SystemUser) => Promise<import('./forward.js').ForwardFile>;
  private readonly allowCommands: ReadonlySet<TargetSource>;
  private readonly allowFiles: ReadonlySet<TargetSource>;
  private readonly aliases: AliasTable;

  constructor(opts: LocalResolverOptions) {
    this.domains = new Set(opts.domains.map(normDomain));
    this.hostname = opts.hostname;
    for (const [k, v] of Object.entries(opts.users ?? {})) this.users.set(k.toLowerCase(), v);
    for (const [domain, map] of Object.entries(opts.virtual ?? {})) {
      this.virtual.set(normDomain(domain), new Map(Object.entries(map).map(([k, v]) => [k.toLowerCase(), v])));
    }
    this.forward = opts.forward;
    this.lookupUser = opts.lookupUser ?? cachedUserLookup();
    this.readForward = opts.readForward ?? readForwardFile;
    this.allowCommands = new Set(opts.allowCommands ?? ALL_SOURCES);
    this.allowFiles = new Set(opts.allowFiles ?? ALL_SOURCES);
    this.aliases = new AliasTable(opts.aliasesFile);
  }

  /** The address is ours to resolve: its domain is local or virtual, or it has no domain. */
  isLocal(address: string): boolean {
    return this.isOurDomain(normDomain(domainOf(address)));
  }

  /**
   * Expands an address: virtual map → aliases (nested, :include:, |pipe, /file) → user map →
   * system users → ~/.forward. An address that is not ours comes back as one remote target.
   * Re-reads the aliases when their files changed (two stat() calls per call otherwise).
   * @returns null for "no such user" (550 5.1.1), including source-routed forms.
   * @throws LocalResolveError: permanent for loops, nesting deeper than 20 and expansions with
   * nothing left to deliver to; temporary for unreadable :include:/.forward files and an
   * aliases file with errors and no compiled table to fall back on.
   */
  async resolve(address: string): Promise<Resolution | null> {
    try {
      await this.aliases.refresh();
    } catch (err) {
      throw new LocalResolveError(`aliases unusable: ${(err as Error).message.split('\n')[0]}`, false, { cause: err });
    }
    const walk = new Walk();
    if (!(await this.resolveAddress(address.trim(), [], walk))) return null;
    if (!walk.targets.size) {
      const why = walk.failed.length ? walk.failed.map((f) => `${f.address}: ${f.reason}`).join('; ') : 'expands to no recipients';
      const unknown = walk.failed.length > 0 && walk.failed.every((f) => f.reason === 'no such user');
      throw new LocalResolveError(`${address}: ${why}`, true, unknown ? { status: '5.1.1' } : {});
    }
    return {
      targets: [...walk.targets.values()],
      ...(walk.errorsTo ? { errorsTo: walk.errorsTo } : {}),
      ...(walk.failed.length ? { failed: walk.failed } : {}),
    };
  }

  private isOurDomain(domain: string): boolean {
    return domain === '' || this.domains.has(domain) || this.virtual.has(domain);
  }

  /** false: nobody here by that address. */
  private async resolveAddress(address: string, chain: string[], walk: Walk): Promise<boolean> {
    // "/path@x" kept through a virtual "@domain" or written in a map is an address, never a file.
    const notMailbox = nonMailboxReason(address);
    if (notMailbox) {
      walk.fail(address, `not a mailbox address (${notMailbox})`);
      return true;
    }
    const domain = normDomain(domainOf(address));
    // RFC 5321 4.1.2: "alice"@x is alice@x when the quotes hide nothing.
    const lp = localPartOf(address).replace(/^"([^"\\]*)"$/, '$1');
    if (!this.isOurDomain(domain)) {
      walk.add({ kind: 'remote', address });
      return true;
    }
    if (!lp || isSourceRouted(address) || isSourceRouted(lp)) return false;

    const vmap = this.virtual.get(domain);
    if (vmap) {
      const key = lp.toLowerCase();
      const base = baseName(key);
      const value = vmap.get(key) ?? (base ? vmap.get(base) : undefined) ?? vmap.get('*');
      if (value !== undefined) {
        const node = `${key}@${domain}`;
        this.enter(chain, node);
        const inner = [...chain, node];
        for (const item of value.split(',').map((s) => s.trim()).filter(Boolean)) {
          const target = item.startsWith('@') ? `${lp}${item}` : item;
          const ok = target.includes('@') ? await this.resolveAddress(target, inner, walk) : await this.resolveName(target, inner, walk);
          if (!ok) walk.fail(target, 'no such user');
        }
        return true;
      }
      if (!this.domains.has(domain)) {
        return (base ?? key) === 'postmaster' ? this.resolveName('postmaster', chain, walk) : false;
      }
    }
    return this.resolveName(lp, chain, walk);
  }

  /** A local part: "user+ext" first, then "user"; postmaster is always someone. */
  private async resolveName(name: string, chain: string[], walk: Walk): Promise<boolean> {
    const key = name.toLowerCase();
    if (!key || isSourceRouted(key)) return false;
    if (await this.resolveKey(key, chain, walk)) return true;
    const base = baseName(key);
    if (base && (await this.resolveKey(base, chain, walk))) return true;
    if ((base ?? key) === 'postmaster') {
      if (!(await this.resolveKey('root', chain, walk))) walk.add({ kind: 'mailbox', user: 'root', uid: 0, gid: 0, home: '/root' });
      return true;
    }
    return false;
  }

  private async resolveKey(key: string, chain: string[], walk: Walk): Promise<boolean> {
    const alias = this.aliases.get(key);
    if (!alias) return this.deliverToUser(key, chain, walk, true);
    this.enter(chain, key);
    if (!walk.listSeen) {
      walk.listSeen = true;
      if (this.aliases.get(`owner-${key}`)) walk.errorsTo = `owner-${key}@${this.hostname}`;
    }
    await this.expandTargets(alias.targets, { self: new Set([key]), chain: [...chain, key], programs: this.aliases.programs, includes: true, source: 'alias' }, walk);
    return true;
  }

  /** The user map, then the system user; their .forward when asked. false: no such user. */
  private async deliverToUser(key: string, chain: string[], walk: Walk, followForward: boolean): Promise<boolean> {
    const user = this.lookupUser(this.users.get(key) ?? key);
    if (!user) return false;
    if (followForward && this.forward) {
      let fwd;
      try {
        fwd = await this.readForward(user);
      } catch (err) {
        throw new LocalResolveError(`cannot read ~${user.name}/.forward: ${(err as Error).message}`, false, { cause: err });
      }
      if (fwd.kind === 'ignored') log.warn(null, 'ignoring .forward', { user: user.name, reason: fwd.reason });
      if (fwd.kind === 'targets') {
        const node = `~${user.name}/.forward`;
        this.enter(chain, node);
        // The line itself only in our log: the reply goes to whoever sent the RCPT, and the helper
        // reads .forward in homes they (and the daemon) cannot read.
        for (const e of fwd.errors) {
          log.warn(null, '.forward line ignored', { user: user.name, error: e });
          walk.fail(node, 'has a line that is not an address (tidemail\'s log says which)');
        }
        const ctx: Context = { self: new Set([key, user.name.toLowerCase()]), chain: [...chain, node], programs: true, includes: false, runAs: user, source: 'forward' };
        await this.expandTargets(fwd.targets, ctx, walk);
        return true;
      }
    }
    walk.add({ kind: 'mailbox', user: user.name, uid: user.uid, gid: user.gid, home: user.home });
    return true;
  }

  private async expandTargets(targets: readonly string[], ctx: Context, walk: Walk): Promise<void> {
    const runAs = ctx.runAs === undefined ? {} : { user: ctx.runAs.name, uid: ctx.runAs.uid };
    for (const raw of targets) {
      const t = classifyTarget(raw);
      switch (t.kind) {
        case 'user':
          if (!(await this.deliverToUser(t.user.toLowerCase(), ctx.chain, walk, false))) walk.fail(raw, 'no such user');
          break;
        case 'pipe':
          if (ctx.programs !== true) walk.fail(raw, `mail to a command refused: ${ctx.programs}`);
          else if (!this.allowCommands.has(ctx.source)) walk.fail(raw, `mail to a command refused: [local] allow_mail_to_commands does not include "${ctx.source}"`);
          else walk.add({ kind: 'pipe', command: t.command, ...runAs });
          break;
        case 'file':
          if (ctx.programs !== true) walk.fail(raw, `mail to a file refused: ${ctx.programs}`);
          else if (!this.allowFiles.has(ctx.source)) walk.fail(raw, `mail to a file refused: [local] allow_mail_to_files does not include "${ctx.source}"`);
          else walk.add({ kind: 'file', path: t.path, ...runAs });
          break;
        case 'include':
          if (ctx.includes) await this.expandInclude(t.path, ctx, walk);
          else walk.fail(raw, ':include: is only allowed in the aliases file');
          break;
        case 'address': {
          const domain = normDomain(domainOf(t.address));
          const lp = localPartOf(t.address).toLowerCase();
          if ((domain === '' || this.domains.has(domain)) && ctx.self.has(lp)) {
            if (!(await this.deliverToUser(lp, ctx.chain, walk, false))) walk.fail(raw, 'no such user');
          } else if (!(await this.resolveAddress(t.address, ctx.chain, walk))) {
            walk.fail(raw, 'no such user');
          }
          break;
        }
        default: {
          const never: never = t;
          throw new Error(`unknown target ${JSON.stringify(never)}`);
        }
      }
    }
  }

  private async expandInclude(file: string, ctx: Context, walk: Walk): Promise<void> {
    const node = `:include:${file}`;
    this.enter(ctx.chain, node);
    const uid = process.getuid?.() ?? 0;
    let inc;
    try {
      inc = await readTargetFile(file, [0, uid]);
    } catch (err) {
      throw new LocalResolveError(`cannot read ${node}: ${(err as Error).message}`, false, { cause: err });
    }
    // An admin's typo in a list file: defer the mail until it is fixed rather than bounce it.
    if (inc.errors.length) throw new LocalResolveError(inc.errors.join('; '), false);
    const programs = ctx.programs !== true ? ctx.programs : inc.safe ? true : (inc.unsafeReason ?? 'unsafe include file');
    await this.expandTargets(inc.targets, { ...ctx, chain: [...ctx.chain, node], programs, source: 'include' }, walk);
  }

  /** Refuses to walk a name twice on one path, or deeper than MAX_DEPTH. */
  private enter(chain: readonly string[], node: string): void {
    const at = chain.indexOf(node);
    if (at >= 0) throw new LocalResolveError(`alias loop: ${[...chain.slice(at), node].join(' → ')}`, true);
    if (chain.length >= MAX_DEPTH) throw new LocalResolveError(`alias nesting deeper than ${MAX_DEPTH} levels: ${[...chain, node].join(' → ')}`, true);
  }
}

/** "user+ext" → "user"; null without an extension ("+x" alone is a name, not an extension). */
function baseName(key: string): string | null {
  const plus = key.indexOf('+');
  return plus > 0 ? key.slice(0, plus) : null;
}
