// Which routes are online right now, asked once: from the running daemon when there is one (it
// also knows `tidemail link up|down` overrides), else by running each route's detectors once —
// the same detectors the daemon uses, without their watchers and timers.

import { parseHostPort } from '../routes/load.js';
import type { RouteProfile } from '../routes/profile.js';
import { CommandDetector } from '../online/command.js';
import type { Detector } from '../online/detector.js';
import { FileDetector } from '../online/file.js';
import { InterfaceDetector } from '../online/netif.js';
import { TcpDetector } from '../online/tcp.js';

export interface LinkAnswer {
  route: string;
  online: boolean;
  why: string;
  since?: number;
}

/**
 * @param tcp also run online.tcp probes (a TCP connection), as the daemon does once the other
 *   detectors say up; `status` leaves them out to stay quick and quiet.
 */
export async function probeLinks(routes: readonly RouteProfile[], opts: { tcp: boolean }): Promise<LinkAnswer[]> {
  return Promise.all(routes.map((r) => probeLink(r, opts.tcp)));
}

async function probeLink(r: RouteProfile, tcp: boolean): Promise<LinkAnswer> {
  if (r.kind === 'local-only') return { route: r.name, online: false, why: 'local-only route' };
  const o = r.online;
  if (o.always) return { route: r.name, online: true, why: 'always online' };
  const detectors: Detector[] = [];
  if (o.file) detectors.push(new FileDetector(o.file));
  if (o.interface) detectors.push(new InterfaceDetector(o.interface));
  if (o.command) detectors.push(new CommandDetector(o.command, o.intervalMs));
  await Promise.all(detectors.map((d) => d.recheck()));
  const parts = detectors.map((d) => `${d.label}: ${d.detail}`);
  let online = detectors.every((d) => d.up === true);
  if (o.tcp) {
    const hp = parseHostPort(o.tcp, 25)!;
    if (!online) parts.push(`tcp ${o.tcp}: link is down; not probed`);
    else if (!tcp) parts.push(`tcp ${o.tcp}: not probed`);
    else {
      const t = new TcpDetector(hp.host, hp.port, o.intervalMs);
      await t.recheck();
      online = t.up === true;
      parts.push(`${t.label}: ${t.detail}`);
    }
  }
  return { route: r.name, online, why: parts.join('; ') };
}
