// online.file: the link is up while a flag file exists (masqmail's online_detect = file).
// Watched with fs.watch on its directory; a one-minute poll covers filesystems without inotify.

import fs from 'node:fs';
import path from 'node:path';
import { BaseDetector } from './detector.js';

const POLL_MS = 60_000;

export class FileDetector extends BaseDetector {
  readonly label: string;
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly file: string) {
    super();
    this.label = `file ${file}`;
  }

  protected async probe(): Promise<{ up: boolean; detail: string }> {
    const up = fs.existsSync(this.file);
    return { up, detail: up ? `${this.file} exists` : `${this.file} does not exist` };
  }

  protected watch(): void {
    try {
      this.watcher = fs.watch(path.dirname(this.file), (_event, name) => {
        if (!name || name === path.basename(this.file)) void this.recheck();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      /* directory missing: the poll will notice when it appears */
    }
    this.timer = setInterval(() => {
      if (!this.watcher) this.watch();
      void this.recheck();
    }, POLL_MS);
    this.timer.unref();
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = null;
    if (this.timer) clearInterval(this.timer);
  }
}
