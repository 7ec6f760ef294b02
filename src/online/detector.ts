// A link detector answers one question — is my link up? — and calls `changed` when the answer
// may have changed. Detectors react to events (fs.watch, netlink via `ip monitor`, hooks) and
// poll only as a slow floor, never more than once a minute.

export interface Detector {
  /** What it watches, for status: "interface wan", "file /run/isp.up", … */
  readonly label: string;
  /** Last answer; null before the first check. */
  readonly up: boolean | null;
  /** Why, for status: "wan is up with 192.0.2.7", "exit 1", … */
  readonly detail: string;
  start(changed: () => void): void;
  /** Checks now (a hook or another detector said something happened). */
  recheck(): Promise<void>;
  stop(): void;
}

/** Shared behaviour: remember the answer, report changes. */
export abstract class BaseDetector implements Detector {
  up: boolean | null = null;
  detail = 'not checked yet';
  protected onChange: () => void = () => undefined;
  private checking: Promise<void> | null = null;
  abstract readonly label: string;

  start(changed: () => void): void {
    this.onChange = changed;
    this.watch();
    void this.recheck();
  }

  recheck(): Promise<void> {
    this.checking ??= this.probe()
      .then(({ up, detail }) => {
        const was = this.up;
        this.up = up;
        this.detail = detail;
        if (was !== up) this.onChange();
      })
      .catch((err: Error) => {
        const was = this.up;
        this.up = false;
        this.detail = `check failed: ${err.message}`;
        if (was !== false) this.onChange();
      })
      .finally(() => (this.checking = null));
    return this.checking;
  }

  protected abstract probe(): Promise<{ up: boolean; detail: string }>;
  /** Start event sources and the slow poll. */
  protected abstract watch(): void;
  abstract stop(): void;
}
