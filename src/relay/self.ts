// Which MX hosts are this machine: our host name, or an address and port our MX listeners
// accept on (a wildcard listener accepts on every local address). Used so that relayed mail
// never loops back to us (deliver/mx.ts) and by `tidemail check` to show our place in a domain's MX list.

import net from 'node:net';
import os from 'node:os';
import type { Config } from '../config/schema.js';
import type { SelfCheck } from '../deliver/mx.js';

const unmapped = (ip: string) => ip.replace(/^::ffff:(?=\d+\.)/i, '').toLowerCase();

function localAddresses(): Set<string> {
  const out = new Set<string>();
  for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) out.add(unmapped(a.address));
  return out;
}

export function selfCheck(config: Config): SelfCheck {
  const names = new Set([config.hostname.toLowerCase()]);
  const listeners = config.smtp.listen.map((l) => ({ host: unmapped(l.host), port: l.port }));
  let local: Set<string> | null = null;
  return {
    names,
    isOwnAddress(ip, port) {
      const a = unmapped(ip);
      return listeners.some((l) => {
        if (l.port !== port) return false;
        if (l.host === a) return true;
        if (l.host !== '0.0.0.0' && l.host !== '::') return false;
        // A wildcard listener: every local address, the whole of 127/8 included.
        if (net.isIPv4(a) && a.startsWith('127.')) return true;
        local ??= localAddresses();
        return local.has(a);
      });
    },
  };
}
