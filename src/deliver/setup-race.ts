// Racing session set-ups (smtp.ts): on a lossy link a connection whose SYN-ACK, greeting or
// EHLO reply was lost waits for TCP's retransmission — 1 s, and 3 s once a handshake packet had
// to be resent (RFC 6298 §5.7) — which is most of a 5 s up-window. Cutting it and starting over
// (the stall hedge) loses what it already had; a second set-up started beside it after a short
// stagger, the first one ready winning, does not. And a set-up the hedge cuts is replaced at
// once while the other runs on, so `width` are under way until one is ready. Nothing of a
// message has been sent on any of them, so racing can never double one. A set-up that is ready
// after the winner is a spare (kept idle for the next message by the caller); one that fails
// after it is forgotten.

/** The time the race reads and the one timer it sets: the real ones unless a test steps time itself. */
export interface RaceClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
}

const realClock: RaceClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout | undefined),
};

export interface RaceOptions<T> {
  /** How long the set-ups under way may take before one more starts beside them. */
  staggerMs: number;
  /** Set-ups under way at once at most. */
  width: number;
  /** The stall limit of each set-up in the order they start (0 = none); its length caps the starts. */
  hedges: readonly number[];
  /** Checked before each further start: false once the link went down or the deadline passed. */
  mayStart(): boolean;
  /** One more set-up starts: beside the others (`why` = 'stagger') or in place of a stalled one. */
  onStart(why: 'stagger' | 'stalled', afterMs: number, err?: unknown): void;
  /** A set-up ready after the winner. */
  onSpare(spare: T): void;
  /** The failure is the stall hedge's cut: worth a new set-up at once, and says least. */
  isStall(err: unknown): boolean;
  /** Default: the real clock and timers. */
  clock?: RaceClock;
}

/**
 * Runs `start(hedge)` for the first of `hedges`, and the next whenever none is ready after
 * `staggerMs` (fewer than `width` under way) or one was cut as stalled; resolves with the first
 * ready, rejects when every one started has failed (with a failure that is not a stall if any).
 */
export function raceSetups<T>(start: (hedgeMs: number) => Promise<T>, o: RaceOptions<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let running = 0;
    let started = 0;
    let won = false;
    let failure: { err: unknown } | undefined;
    const clock = o.clock ?? realClock;
    let timer: unknown;
    const begin = clock.now();
    const more = () => !won && started < o.hedges.length && o.mayStart();
    const arm = () => {
      clock.clearTimeout(timer);
      if (running >= o.width || started >= o.hedges.length) return;
      timer = clock.setTimeout(() => {
        if (running === 0 || running >= o.width || !more()) return;
        o.onStart('stagger', clock.now() - begin);
        launch();
      }, o.staggerMs);
    };
    const launch = () => {
      const hedge = o.hedges[started++]!;
      running++;
      arm();
      start(hedge).then(
        (ready) => {
          running--;
          if (won) return o.onSpare(ready);
          won = true;
          clock.clearTimeout(timer);
          resolve(ready);
        },
        (err: unknown) => {
          running--;
          if (won) return;
          if (!failure || (o.isStall(failure.err) && !o.isStall(err))) failure = { err };
          // A stalled set-up is replaced at once; one that failed outright (refused,
          // unreachable, a 5xx greeting) is the answer unless another is still under way.
          if (o.isStall(err) && more()) {
            o.onStart('stalled', clock.now() - begin, err);
            return launch();
          }
          if (running > 0) return arm();
          clock.clearTimeout(timer);
          reject(failure.err);
        },
      );
    };
    launch();
  });
}
