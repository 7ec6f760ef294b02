// `tidemail link up|down NAME`: called by the shipped hooks (OpenWrt hotplug, NetworkManager
// dispatcher, networkd-dispatcher, ifupdown, ppp ip-up/ip-down). NAME is a route or an interface.

import { UsageError } from '../errors.js';
import { cliContext, takeConfigOption } from './context.js';
import { EX } from './exit.js';
import { usageLine } from './usage.js';

interface LinkReply {
  matched: string[];
  states: { route: string; online: boolean; why: string }[];
}

export async function runLink(argv: string[]): Promise<number> {
  const args = [...argv];
  const ctx = cliContext(takeConfigOption(args));
  const [dir, name] = args;
  if ((dir !== 'up' && dir !== 'down') || !name) throw new UsageError(usageLine('link'));
  const r = (await ctx.ask({ cmd: 'link', name, up: dir === 'up' }, 15_000)) as LinkReply | null;
  if (r === null) {
    // Hooks run whether or not the daemon does; not running is not an error for them.
    process.stderr.write('tidemail: daemon not running; nothing to tell\n');
    return EX.OK;
  }
  for (const s of r.states) process.stdout.write(`${s.route}: ${s.online ? 'online' : 'offline'} (${s.why})\n`);
  return EX.OK;
}
