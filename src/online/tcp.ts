// online.tcp: a reachability probe — the link counts as up only when host:port accepts a TCP
// connection. It runs only after the route's other detectors say up (so nothing is sent on a
// dead link), then at the route's interval.

import net from 'node:net';
import { BaseDetector } from './detector.js';

const TIMEOUT_MS = 10_000;

export class TcpDetector extends BaseDetector {
  readonly label: string;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly host: string, private readonly port: number, private readonly intervalMs: number) {
    super();
    this.label = `tcp ${host}:${port}`;
  }

  protected probe(): Promise<{ up: boolean; detail: string }> {
    return new Promise((resolve) => {
      const sock = net.createConnection({ host: this.host, port: this.port });
      const done = (up: boolean, detail: string) => {
        sock.destroy();
        resolve({ up, detail });
      };
      sock.setTimeout(TIMEOUT_MS, () => done(false, `no answer within ${TIMEOUT_MS / 1000}s`));
      sock.once('connect', () => done(true, `${this.host}:${this.port} reachable`));
      sock.once('error', (err: NodeJS.ErrnoException) => done(false, `${this.host}:${this.port}: ${err.code ?? err.message}`));
    });
  }

  /** Set by the monitor: probe only while the route's other detectors say up. */
  gate: () => boolean = () => true;

  protected watch(): void {
    this.timer = setInterval(() => {
      if (this.gate()) void this.recheck();
    }, this.intervalMs);
    this.timer.unref();
  }

  /** The monitor starts tcp probes itself, after the other detectors agree. */
  override start(changed: () => void): void {
    this.onChange = changed;
    this.watch();
  }

  /** Link went down: forget the last answer without probing. */
  markDown(detail: string): void {
    this.up = false;
    this.detail = detail;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
