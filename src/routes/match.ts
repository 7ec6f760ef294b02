// Route criteria: globs on addresses. A pattern with an @ is matched against the whole address,
// one without against the domain ("example.net", "*.example.net") — so `senders = ["example.net"]`
// reads naturally. A bare local part such as "root" is matched against the local part.

import { domainOf, localPartOf } from '../message/address.js';
import type { RouteCriteria } from './profile.js';

const cache = new Map<string, RegExp>();

function globToRegExp(glob: string): RegExp {
  let re = cache.get(glob);
  if (!re) {
    const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
    re = new RegExp(`^${body}$`, 'i');
    cache.set(glob, re);
  }
  return re;
}

export function addressMatches(address: string, pattern: string): boolean {
  if (pattern === '*') return true;
  if (pattern.includes('@')) return globToRegExp(pattern).test(address);
  if (pattern.includes('.') || pattern.includes('*')) return globToRegExp(pattern).test(domainOf(address));
  return globToRegExp(pattern).test(localPartOf(address));
}

const anyMatch = (address: string, patterns: readonly string[]) => patterns.some((p) => addressMatches(address, p));

export function criteriaMatch(c: RouteCriteria, sender: string, recipient: string): boolean {
  if (c.senders.length && !anyMatch(sender, c.senders)) return false;
  if (c.recipients.length && !anyMatch(recipient, c.recipients)) return false;
  if (anyMatch(sender, c.notSenders)) return false;
  if (anyMatch(recipient, c.notRecipients)) return false;
  return true;
}
