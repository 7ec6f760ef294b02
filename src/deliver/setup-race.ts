// Racing session set-ups (smtp.ts): on a lossy link a connection whose SYN-ACK, greeting or
// EHLO reply was lost waits for TCP's retransmission — 1 s, and 3 s once a handshake packet had
// to be resent (RFC 6298 §5.7) — which is most of a 5 s up-window. Cutting it and starting over
// (the stall hedge) loses what it already had; a second set-up started beside it after a short
// stagger, the first one ready winning, does not. Nothing of a message has been sent on any of
// them, so racing can never double one. A set-up that is ready after the winner is a spare
// (kept idle for the next message by the caller); one that fails after it is forgotten.

export interface RaceOptions<T> {
  /** How long the first set-up may take before a second starts beside it. */
  staggerMs: number;
  /** Set-ups at once at most (the first included). */
  width: number;
  /** Checked before each extra start: false once the link went down or the deadline passed. */
  mayStart(): boolean;
  /** An extra set-up is started (for the log). */
  onRace(afterMs: number): void;
  /** A set-up ready after the winner. */
  onSpare(spare: T): void;
  /** Of two failures, the one to report: the first unless `better` says the second says more. */
  better?(err: unknown, than: unknown): boolean;
}

/**
 * Runs `start()`, and again every `staggerMs` while none is ready and fewer than `width` are
 * running; resolves with the first ready, rejects when every one started has failed.
 */
export function raceSetups<T>(start: () => Promise<T>, o: RaceOptions<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let running = 0;
    let started = 0;
    let won = false;
    let failure: { err: unknown } | undefined;
    let timer: NodeJS.Timeout | undefined;
    const begin = Date.now();
    const launch = () => {
      started++;
      running++;
      if (started < o.width) {
        timer = setTimeout(() => {
          if (won || running === 0 || !o.mayStart()) return;
          o.onRace(Date.now() - begin);
          launch();
        }, o.staggerMs);
      }
      start().then(
        (ready) => {
          running--;
          if (won) return o.onSpare(ready);
          won = true;
          clearTimeout(timer);
          resolve(ready);
        },
        (err: unknown) => {
          running--;
          if (won) return;
          if (!failure || o.better?.(err, failure.err)) failure = { err };
          // A set-up that failed outright (refused, unreachable, a 5xx greeting) is the answer
          // unless another is still under way; no new one is started for it.
          if (running > 0) return;
          clearTimeout(timer);
          reject(failure.err);
        },
      );
    };
    launch();
  });
}
