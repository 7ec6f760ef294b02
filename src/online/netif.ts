// online.interface: an interface is up (operstate up, or "unknown" with IFF_UP|IFF_RUNNING as
// ppp/tun report) and has a global address. Events come from one shared `ip -o monitor link
// address route` process (netlink), with a one-minute poll of /sys/class/net as the floor.
// On OpenWrt a logical network name such as "wan" is asked of ubus when it is not a device.

import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { log } from '../log/log.js';
import { BaseDetector } from './detector.js';

const POLL_MS = 60_000;
const DEBOUNCE_MS = 100;

/** One `ip monitor` for all interface detectors. */
class NetlinkEvents {
  private proc: ChildProcess | null = null;
  private readonly listeners = new Set<() => void>();
  private timer: NodeJS.Timeout | null = null;
  /** More messages came while the burst's timer ran. */
  private pending = false;
  private failed = false;

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    this.ensure();
    return () => {
      this.listeners.delete(fn);
      if (!this.listeners.size) this.close();
    };
  }

  private ensure(): void {
    if (this.proc || this.failed) return;
    const proc = spawn('ip', ['-o', 'monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.proc = proc;
    proc.on('error', () => {
      this.failed = true; // no iproute2: the poll is all we have
      this.proc = null;
    });
    proc.on('exit', () => {
      if (this.proc === proc) this.proc = null;
    });
    proc.stdout!.on('data', () => {
      // The first message of a burst is checked at once: a lost carrier must cut the route's
      // sessions before they send another SYN (every ms of delay is a window for one). The rest
      // of the burst (addresses, routes) → one more check when it is over.
      if (this.timer) {
        this.pending = true;
        return;
      }
      this.listeners.forEach((l) => l());
      this.timer = setTimeout(() => {
        this.timer = null;
        if (this.pending) this.listeners.forEach((l) => l());
        this.pending = false;
      }, DEBOUNCE_MS);
    });
    proc.unref();
    (proc.stdout as unknown as { unref?: () => void }).unref?.();
  }

  private close(): void {
    this.proc?.kill();
    this.proc = null;
  }
}

const netlink = new NetlinkEvents();

function readSys(name: string, attr: string): string | null {
  try {
    return fs.readFileSync(`/sys/class/net/${name}/${attr}`, 'utf8').trim();
  } catch {
    return null;
  }
}

function globalAddresses(name: string): string[] {
  return (os.networkInterfaces()[name] ?? [])
    .filter((a) => !a.internal && !(a.family === 'IPv6' && /^fe80:/i.test(a.address)))
    .map((a) => a.address);
}

/** OpenWrt: `ubus call network.interface.wan status` → { "up": true, … }. */
function ubusStatus(name: string): Promise<{ up: boolean; detail: string } | null> {
  return new Promise((resolve) => {
    execFile('ubus', ['call', `network.interface.${name}`, 'status'], { timeout: 5000 }, (err, stdout) => {
      if (err) return resolve(null);
      try {
        const st = JSON.parse(stdout) as { up?: boolean; l3_device?: string };
        resolve({ up: !!st.up, detail: `ubus: ${name} is ${st.up ? 'up' : 'down'}${st.l3_device ? ` (${st.l3_device})` : ''}` });
      } catch {
        resolve(null);
      }
    });
  });
}

export class InterfaceDetector extends BaseDetector {
  readonly label: string;
  private unsubscribe: (() => void) | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(readonly ifname: string) {
    super();
    this.label = `interface ${ifname}`;
  }

  protected async probe(): Promise<{ up: boolean; detail: string }> {
    const oper = readSys(this.ifname, 'operstate');
    if (oper === null) {
      return (await ubusStatus(this.ifname)) ?? { up: false, detail: `no interface ${this.ifname}` };
    }
    const flags = Number.parseInt(readSys(this.ifname, 'flags') ?? '0', 16);
    const running = oper === 'up' || (oper === 'unknown' && (flags & 0x41) === 0x41);
    if (!running) return { up: false, detail: `${this.ifname} is ${oper}` };
    const addrs = globalAddresses(this.ifname);
    if (!addrs.length) return { up: false, detail: `${this.ifname} is up but has no global address` };
    return { up: true, detail: `${this.ifname} is up with ${addrs.join(', ')}` };
  }

  protected watch(): void {
    this.unsubscribe = netlink.subscribe(() => void this.recheck());
    this.timer = setInterval(() => void this.recheck(), POLL_MS);
    this.timer.unref();
    log.debug(null, 'watching interface', { ifname: this.ifname });
  }

  stop(): void {
    this.unsubscribe?.();
    if (this.timer) clearInterval(this.timer);
  }
}
