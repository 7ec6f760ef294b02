// Lines that a client or a local user can make us write over and over — a MAIL with a big SIZE=
// refused for space, in a retry loop; a maildrop file set aside, by the thousand — are written
// once per kind per minute: the first at once, then what came after it as one line a minute
// later, the latest of them with "(N more like this since T)". Only lines without a queue id
// go through here (the API has no id): a line about an accepted message is never held back.

import { log, type Fields, type LogLevel } from './log.js';

export const REPEAT_WINDOW_MS = 60_000;

interface Held {
  level: LogLevel;
  msg: string;
  fields?: Fields;
}

interface Kind {
  /** When the last line of this kind was written. */
  writtenAt: number;
  /** Lines held back since then, and the latest of them. */
  count: number;
  latest: Held | null;
  timer: unknown;
}

export interface RepeatClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(t: unknown): void;
}

const realClock: RepeatClock = {
  now: Date.now,
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout),
};

export class RepeatLimiter {
  private readonly kinds = new Map<string, Kind>();

  constructor(
    private readonly clock: RepeatClock = realClock,
    private readonly windowMs = REPEAT_WINDOW_MS,
    private readonly write: (level: LogLevel, msg: string, fields?: Fields) => void = (level, msg, fields) => log[level](null, msg, fields),
  ) {}

  /** Writes the line now, or holds it back when a line of `kind` was written less than a minute ago. */
  log(kind: string, level: LogLevel, msg: string, fields?: Fields): void {
    const now = this.clock.now();
    const k = this.kinds.get(kind);
    if (!k || (k.count === 0 && !(now >= k.writtenAt && now - k.writtenAt < this.windowMs))) {
      // A clock stepped back (now < writtenAt) is not "recently": the line goes out.
      this.kinds.set(kind, { writtenAt: now, count: 0, latest: null, timer: null });
      this.write(level, msg, fields);
      return;
    }
    k.count++;
    k.latest = { level, msg, fields };
    k.timer ??= this.clock.setTimeout(() => this.summarise(kind), Math.max(0, k.writtenAt + this.windowMs - now));
    onExit(this);
  }

  /** Lines of `kind` held back now (for tests and status). */
  held(kind: string): number {
    return this.kinds.get(kind)?.count ?? 0;
  }

  /** Writes what is held back now, without waiting for the minute (the daemon's stop, a CLI's exit). */
  flush(): void {
    for (const kind of this.kinds.keys()) this.summarise(kind);
  }

  private summarise(kind: string): void {
    const k = this.kinds.get(kind);
    if (!k) return;
    if (k.timer !== null) this.clock.clearTimeout(k.timer);
    k.timer = null;
    if (!k.count || !k.latest) return;
    const { level, msg, fields } = k.latest;
    const since = new Date(k.writtenAt).toISOString();
    const n = k.count;
    k.count = 0;
    k.latest = null;
    k.writtenAt = this.clock.now();
    this.write(level, `${msg} (${n} more like this since ${since})`, fields);
  }
}

const hooked = new WeakSet<RepeatLimiter>();
/** A CLI run (runq's pickup) exits before the minute is over: what it held back is written then. */
function onExit(r: RepeatLimiter): void {
  if (hooked.has(r)) return;
  hooked.add(r);
  process.once('exit', () => r.flush());
}

/** The process's limiter: the SMTP front's and the maildrop pickup's repeated lines. */
export const repeats = new RepeatLimiter();
