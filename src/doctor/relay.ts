// Probe: each [relay] domain — where its mail goes from here. For a backup MX: the domain's MX
// list with our place in it (a backup relays only to better MX hosts; the best MX being us means
// a loop). For a next_hop: the host, and that it is not this machine. And which route carries it.

import dns from 'node:dns';
import type { Config } from '../config/schema.js';
import { dnsErrorText, makeResolver, resolveAddresses } from '../deliver/mx-dns.js';
import { selfCheck } from '../relay/self.js';
import type { RouteProfile } from '../routes/profile.js';
import { selectRoute } from '../routes/select.js';
import { fail, ok, warn, type Finding } from './finding.js';

export async function probeRelay(config: Config, routes: readonly RouteProfile[], servers?: string[]): Promise<Finding[]> {
  const self = selfCheck(config);
  const out: Finding[] = [];
  for (const domain of config.relay.domains) {
    const area = `relay ${domain}`;
    // Which route would carry it, were every link up (the daemon picks among those online).
    const choice = selectRoute(routes, `postmaster@${config.hostname}`, `postmaster@${domain}`, () => true);
    if (!choice.route) {
      out.push(fail(area, `accepted from anyone, but no route carries it: ${choice.reason}`, `add a route with kind = "mx" (direct to the domain's MX hosts), or [relay.next_hop] "${domain}" = "HOST:25"`));
      continue;
    }
    const route = choice.route;
    const hop = config.relay.nextHops[domain];
    if (hop) {
      // getaddrinfo, as delivery resolves it (/etc/hosts names work).
      const addrs = await dns.promises.lookup(hop.host, { all: true }).then((l) => l.map((a) => a.address), () => null);
      if (!addrs) {
        out.push(warn(area, `next hop ${hop.host} does not resolve now`, `check the name in [relay.next_hop] "${domain}"; the mail waits until it resolves`));
        continue;
      }
      const mine = self.names.has(hop.host.toLowerCase()) || addrs.some((a) => self.isOwnAddress(a, hop.port));
      out.push(mine
        ? fail(area, `next hop ${hop.host}:${hop.port} is this machine: the mail would loop`, `point [relay.next_hop] "${domain}" at the server that delivers ${domain}, or add ${domain} to [local] domains`)
        : ok(area, `relayed to ${hop.host}:${hop.port} (next_hop, route ${route.name})`));
      continue;
    }
    if (route.kind !== 'mx') {
      out.push(ok(area, `relayed by route ${route.name} (${route.kind}); its server looks up the MX hosts`));
      continue;
    }
    const resolver = makeResolver(route.dnsServers.length ? route.dnsServers : servers ?? []);
    let mx: { exchange: string; priority: number }[];
    try {
      mx = (await resolver.resolveMx(domain)).filter((r) => r.exchange && r.exchange !== '.').sort((a, b) => a.priority - b.priority);
    } catch (err) {
      out.push(warn(area, `MX lookup failed: ${dnsErrorText(err)}`, `check the domain's DNS; mail for ${domain} waits in the queue until its MX hosts can be found`));
      continue;
    }
    const isUs = await Promise.all(mx.map(async (r) => self.names.has(r.exchange.toLowerCase())
      || (await resolveAddresses(resolver, r.exchange)).addresses.some((a) => self.isOwnAddress(a, route.port))));
    const list = mx.map((r, i) => `${r.priority} ${r.exchange}${isUs[i] ? ' (this host)' : ''}`).join(', ');
    const ours = isUs.indexOf(true);
    if (ours < 0) {
      out.push(ok(area, `MX ${list || 'none (the domain itself)'}; this host is not among them, so it relays what clients hand it; route ${route.name}`));
      continue;
    }
    const better = mx.filter((r) => r.priority < mx[ours]!.priority);
    out.push(better.length
      ? ok(area, `MX ${list}: this host is a backup MX (preference ${mx[ours]!.priority}); relayed mail goes to ${better.map((r) => r.exchange).join(', ')} by route ${route.name}`)
      : fail(area, `MX ${list}: this host is the best MX, so relayed mail would loop back to it (it is deferred)`, `give the primary MX a lower preference number than ${mx[ours]!.exchange}, or add ${domain} to [local] domains to deliver it here`));
  }
  return out;
}
