// One transport per route, chosen by the route's kind.

import { domainOf } from '../message/address.js';
import type { RouteProfile } from '../routes/profile.js';
import { createMxLookup } from './mx.js';
import { PipeTransport } from './pipe.js';
import { popBeforeSmtp } from './pop-before-smtp.js';
import { SmtpTransport, type SmtpTransportOptions } from './smtp.js';
import { sshHop } from './ssh-tunnel.js';
import { sameForAll, type Transport } from './transport.js';
import { wrapperHop } from './wrapper.js';

export function createTransport(route: RouteProfile, hostname: string): Transport {
  if (route.kind === 'pipe') return new PipeTransport(route);
  if (route.kind === 'local-only') {
    return {
      name: route.name,
      deliver: async (job) => sameForAll(job, { outcome: 'hold', message: `route ${route.name} is local-only` }),
      close: async () => undefined,
    };
  }
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
      const hop = { label: `${route.host}:${route.port}`, host: route.host, port: route.port, servername: route.host };
      return new SmtpTransport({ ...common, poolKey: () => route.name, hops: async () => [hop] });
    }
    case 'mx': {
      const mx = createMxLookup(route);
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

/** Jobs carry recipients that share a message and a route — and, for MX, a domain. */
export function jobKey(route: RouteProfile, msgid: string, recipient: string): string {
  return route.kind === 'mx' ? `${msgid}/${route.name}/${domainOf(recipient)}` : `${msgid}/${route.name}`;
}
