// newaliases' look at what the table means, before any mail meets it: a local target that is
// neither an alias nor a user (it would bounce 5.1.1), and alias chains that come back to
// themselves (every address through them bounces 5.4.6). Warnings only, as Postfix's
// postalias: the table is still written, an admin may be about to create the user.
//
// Targets are read the way resolve.ts reads them: a name or an address in a local domain is
// an alias, else (through [local] users) a system user, "user+ext" falling back to "user";
// "name: name" and \name are that user's mailbox. Virtual domains are checked against their
// map's keys only; pipes, files, :include: files and remote addresses are not looked into.

import type { Config } from '../config/schema.js';
import { domainOf, localPartOf } from '../message/address.js';
import { classifyTarget, excerpt, type AliasEntry } from './aliases.js';
import { cachedUserLookup, passwdFileLookup, type SystemUser } from './users.js';

export interface LintOptions {
  /** Local domains, lower-case (the hostname among them). */
  domains: string[];
  /** [local] users: local part → system user. */
  users?: Record<string, string>;
  /** [local] virtual: domain → map keys. */
  virtual?: Record<string, Record<string, string>>;
  lookupUser: (name: string) => SystemUser | null;
}

/** What the daemon's resolver knows, from the config: its domains, maps and users. */
export function lintOptionsFor(config: Config): LintOptions {
  const local = config.local;
  const system = cachedUserLookup();
  const fromFile = local.passwdFile ? passwdFileLookup(local.passwdFile) : null;
  return {
    domains: [...new Set([...local.domains, config.hostname.toLowerCase()])],
    users: local.users,
    virtual: local.virtual,
    lookupUser: (n) => fromFile?.(n) ?? system(n),
  };
}

/** How many warnings of each kind are shown; the rest are counted. */
const SHOWN = 20;

const norm = (d: string) => d.toLowerCase().replace(/\.$/, '');
const baseName = (n: string) => {
  const i = n.indexOf('+');
  return i > 0 ? n.slice(0, i) : null;
};

/** "file:line: …" warnings for unknown targets and loops in `aliases`. */
export function lintAliases(aliases: ReadonlyMap<string, AliasEntry>, file: string, opts: LintOptions): string[] {
  const domains = new Set(opts.domains.map(norm));
  const users = new Map(Object.entries(opts.users ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  const virtual = new Map(Object.entries(opts.virtual ?? {}).map(([d, m]) => [norm(d), new Set(Object.keys(m).map((k) => k.toLowerCase()))]));
  const known = new Map<string, boolean>();
  const isUser = (key: string) => {
    let hit = known.get(key);
    if (hit === undefined) known.set(key, (hit = opts.lookupUser(users.get(key) ?? key) !== null));
    return hit;
  };

  const unknown: string[] = [];
  let unknownCount = 0;
  const edges = new Map<string, string[]>();
  const report = (e: AliasEntry, target: string, why: string) => {
    if (unknownCount++ < SHOWN) unknown.push(`${file}:${e.line}: ${excerpt(e.name)}: "${excerpt(target)}" ${why}; mail to ${excerpt(e.name)} for it bounces (5.1.1 user unknown)`);
  };
  /** The alias a local name leads to, or null when it is a user (or postmaster); undefined: nobody. */
  const lead = (name: string): string | null | undefined => {
    if (aliases.has(name)) return name;
    if (isUser(name)) return null;
    const base = baseName(name);
    if (base && aliases.has(base)) return base;
    if (base && isUser(base)) return null;
    return (base ?? name) === 'postmaster' || (base ?? name) === 'root' ? null : undefined;
  };

  for (const e of aliases.values()) {
    const out: string[] = [];
    for (const raw of e.targets) {
      const t = classifyTarget(raw);
      if (t.kind === 'user') {
        if (!isUser(t.user.toLowerCase())) report(e, raw, 'is not a user here');
        continue;
      }
      if (t.kind !== 'address') continue;
      const domain = norm(domainOf(t.address));
      const lp = localPartOf(t.address).replace(/^"([^"\\]*)"$/, '$1').toLowerCase();
      const vmap = virtual.get(domain);
      if (vmap && !domains.has(domain)) {
        const base = baseName(lp);
        if (!vmap.has(lp) && !(base && vmap.has(base)) && !vmap.has('*') && (base ?? lp) !== 'postmaster') report(e, raw, `is not in [local.virtual] "${domain}"`);
        continue;
      }
      if (domain !== '' && !domains.has(domain)) continue;
      if (lp === e.name) {
        if (!isUser(lp)) report(e, raw, 'names this alias itself (its own mailbox), but there is no such user');
        continue;
      }
      const to = lead(lp);
      if (to === undefined) report(e, raw, 'is neither an alias nor a user here');
      else if (to !== null) out.push(to);
    }
    if (out.length) edges.set(e.name, out);
  }
  if (unknownCount > SHOWN) unknown.push(`${file}: … and ${unknownCount - SHOWN} more unknown targets`);
  return [...unknown, ...findLoops(edges, aliases, file)];
}

/** One warning per cycle found by an iterative depth-first walk (500 000 aliases stay flat). */
function findLoops(edges: Map<string, string[]>, aliases: ReadonlyMap<string, AliasEntry>, file: string): string[] {
  const out: string[] = [];
  let count = 0;
  const state = new Map<string, 1 | 2>(); // 1: on the current path, 2: done
  for (const start of edges.keys()) {
    if (state.has(start)) continue;
    const path: string[] = [start];
    const next: number[] = [0];
    state.set(start, 1);
    while (path.length) {
      const node = path[path.length - 1]!;
      const succ = edges.get(node) ?? [];
      const i = next[next.length - 1]!;
      if (i >= succ.length) {
        state.set(node, 2);
        path.pop();
        next.pop();
        continue;
      }
      next[next.length - 1] = i + 1;
      const to = succ[i]!;
      const s = state.get(to);
      if (s === 1) {
        const cycle = [...path.slice(path.indexOf(to)), to];
        if (count++ < SHOWN) {
          const where = cycle.slice(0, -1).map((n) => `${n} (line ${aliases.get(n)?.line})`);
          out.push(`${file}:${aliases.get(to)?.line}: alias loop: ${cycle.map((n) => excerpt(n)).join(' → ')}; mail to any of them bounces (5.4.6 routing loop) — break it at one of ${where.join(', ')}`);
        }
      } else if (s === undefined) {
        state.set(to, 1);
        path.push(to);
        next.push(0);
      }
    }
  }
  if (count > SHOWN) out.push(`${file}: … and ${count - SHOWN} more alias loops`);
  return out;
}
