// A [relay] next_hop is a route of its own, "relay-DOMAIN": always online (the host is named, so
// it is on the LAN or reachable by the admin's word), first in order, for that domain only, with
// opportunistic TLS as for MX delivery. It shows in `tidemail status` like any route.

import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import { DEFAULT_DEADLINES, type MxRoute, type RouteProfile } from '../routes/profile.js';

export function relayRoutes(config: Config): MxRoute[] {
  return Object.entries(config.relay.nextHops).map(([domain, hop]) => ({
    name: `relay-${domain}`,
    file: config.file ?? '(config)',
    priority: Number.MIN_SAFE_INTEGER,
    senders: [],
    recipients: [domain],
    notSenders: [],
    notRecipients: [],
    online: { always: true, intervalMs: 5 * 60_000 },
    rewrite: { map: {} },
    maxConnections: 2,
    messagesPerConnection: 100,
    fetch: [],
    kind: 'mx',
    port: hop.port,
    dnsServers: [],
    nextHop: hop,
    tls: 'opportunistic',
    tlsVerify: false,
    connectTimeoutMs: 10_000,
    keepAliveMs: 15_000,
    progressMs: 20_000,
    stallMs: 3_000,
    allowPlainAuth: false,
    deadlines: DEFAULT_DEADLINES,
  }));
}

/** The route files' routes with the [relay] next hops in front. */
export function withRelayRoutes(config: Config, routes: RouteProfile[]): RouteProfile[] {
  const relay = relayRoutes(config);
  for (const r of relay) {
    const clash = routes.find((x) => x.name === r.name);
    if (clash) throw new ConfigError(`${clash.file}:1:1: route name ${r.name} is the one [relay.next_hop] gives its route\n  fix: rename ${clash.file} (e.g. to ${r.name}-file.toml), or remove that next_hop`);
  }
  return [...relay, ...routes];
}
