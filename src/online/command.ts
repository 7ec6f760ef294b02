// online.command: the link is up while a command exits 0 (e.g. `ping -c1 -W2 192.0.2.1`,
// `nmcli -t networking connectivity | grep -q full`). Run through /bin/sh, at the route's
// interval (≥ 1 minute) and whenever a link event arrives.

import { spawn } from 'node:child_process';
import { BaseDetector } from './detector.js';

const TIMEOUT_MS = 30_000;

export class CommandDetector extends BaseDetector {
  readonly label: string;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly command: string, private readonly intervalMs: number) {
    super();
    this.label = `command ${command}`;
  }

  protected probe(): Promise<{ up: boolean; detail: string }> {
    return new Promise((resolve) => {
      const child = spawn('/bin/sh', ['-c', this.command], { stdio: 'ignore' });
      const timer = setTimeout(() => child.kill('SIGKILL'), TIMEOUT_MS);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ up: false, detail: `cannot run: ${err.message}` });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ up: code === 0, detail: signal ? `killed by ${signal}` : `exit ${code}` });
      });
    });
  }

  protected watch(): void {
    this.timer = setInterval(() => void this.recheck(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
