// A clock and timers that a test steps by hand: advance(ms) runs the timers that fall due, in
// order, each at its own time, and lets the promise callbacks they set off run. A test of timing
// code can then check "nothing started within 250 ms" exactly, instead of sleeping past it.

interface Timer {
  at: number;
  fn: () => void;
}

export interface ManualTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
  /** Moves the clock on by `ms`, running what falls due on the way. */
  advance(ms: number): Promise<void>;
  /** Timers set and not yet run or cleared. */
  readonly pending: number;
}

/** Lets every promise callback queued so far (and the ones they queue) run. */
export const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export function manualTimers(start = 0): ManualTimers {
  let now = start;
  const timers = new Set<Timer>();
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      const t = { at: now + Math.max(0, ms), fn };
      timers.add(t);
      return t;
    },
    clearTimeout: (t) => void timers.delete(t as Timer),
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        await settle();
        const due = [...timers].filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        timers.delete(due);
        now = due.at;
        due.fn();
      }
      now = end;
      await settle();
    },
    get pending() {
      return timers.size;
    },
  };
}
