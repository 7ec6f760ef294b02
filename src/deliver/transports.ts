// One transport per route, chosen by the route's kind. Loaded by factory.ts when a route first
// delivers: this module pulls in every SMTP client piece (issue 17: idle memory).

import net from 'node:net';
import { domainOf } from '../message/address.js';
import type { RouteProfile } from '../routes/profile.js';
import { hostPortLabel } from './dial.js';
import { createMxLookup, type SelfCheck } from './mx.js';
import { addressResolver } from './mx-dns.js';
import { PipeTransport } from './pipe.js';
import { popBeforeSmtp } from './pop-before-smtp.js';
import { SmtpTransport, type SmtpHop, type SmtpTransportOptions } from './smtp.js';
import { sshHop } from './ssh-tunnel.js';
import type { Transport } from './transport.js';
import { wrapperHop } from './wrapper.js';

/** @param self tells an MX that is this machine (mail must not loop back to us). */
export function buildTransport(route: RouteProfile, hostname: string, self?: SelfCheck): Transport {
  if (route.kind === 'pipe') return new PipeTransport(route);
  if (route.kind === 'local-only') throw new Error('local-only routes have no transport module');
  const common: Omit<SmtpTransportOptions, 'hops' | 'poolKey'> = {
    name: route.name,
    hostname,
    spec: route,
    maxConnections: route.maxConnections,
    messagesPerConnection: route.messagesPerConnection,
    beforeConnect: route.popBeforeSmtp ? () => popBeforeSmtp(route.popBeforeSmtp!) : undefined,
  };
  switch (route.kind) {
    case 'smarthost': {
      // With dns_servers the names are resolved there (both families), else by getaddrinfo.
      const resolve = route.dnsServers.length ? addressResolver(route.dnsServers) : undefined;
      // In the order written; SmtpTransport moves to the next on a connection failure.
      const hops: SmtpHop[] = route.hosts.map((h) => ({
        label: hostPortLabel(h.host, h.port),
        host: h.host,
        port: h.port,
        // SNI carries names only (RFC 6066 3); a smarthost given by address is verified against it.
        servername: net.isIP(h.host) ? '' : h.host,
        resolve,
      }));
      return new SmtpTransport({ ...common, poolKey: () => route.name, hops: async () => hops });
    }
    case 'mx': {
      const mx = createMxLookup(route, self);
      return new SmtpTransport({
        ...common,
        poolKey: (job) => domainOf(job.recipients[0]!.recipient),
        hops: (job) => mx.hops(job),
      });
    }
    case 'ssh': {
      const hop = sshHop(route);
      return new SmtpTransport({ ...common, poolKey: () => route.name, hops: async () => [hop] });
    }
    case 'wrapper': {
      const hop = wrapperHop(route);
      return new SmtpTransport({ ...common, poolKey: () => route.name, hops: async () => [hop] });
    }
  }
}
