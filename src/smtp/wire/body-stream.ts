// The message body as the onData hook reads it: an async iterable fed by the data reader, with
// back-pressure both ways. When more than HIGH_WATER bytes wait unread (the spool is slower
// than the client), `onFull` stops reading the socket; once the reader has caught up,
// `onDrained` starts it again. Memory held per message is bounded by that, whatever its size.

const HIGH_WATER = 256 * 1024;

export class BodyStream implements AsyncIterable<Buffer> {
  private readonly queue: Buffer[] = [];
  private queued = 0;
  private ended = false;
  private error: Error | null = null;
  private waiter: ((r: IteratorResult<Buffer>) => void) | null = null;
  private failWaiter: ((err: Error) => void) | null = null;
  private full = false;

  constructor(private readonly onFull: () => void, private readonly onDrained: () => void) {}

  /** Bound once: the data reader calls it for every slice. */
  readonly push = (b: Buffer): void => {
    if (this.ended || this.error) return;
    const w = this.waiter;
    if (w && this.queued === 0) {
      this.waiter = this.failWaiter = null;
      w({ value: b, done: false });
      return;
    }
    this.queue.push(b);
    this.queued += b.length;
    if (!this.full && this.queued > HIGH_WATER) {
      this.full = true;
      this.onFull();
    }
  };

  end(): void {
    if (this.ended || this.error) return;
    this.ended = true;
    if (this.waiter && this.queued === 0) this.settle();
  }

  /** The client went away mid-message: the reader's next step rejects with `err`. */
  fail(err: Error): void {
    if (this.ended || this.error) return;
    this.error = err;
    this.queue.length = 0;
    this.queued = 0;
    const f = this.failWaiter;
    this.waiter = this.failWaiter = null;
    f?.(err);
  }

  private settle(): void {
    const w = this.waiter!;
    this.waiter = this.failWaiter = null;
    w({ value: undefined, done: true });
  }

  private next(): Promise<IteratorResult<Buffer>> {
    if (this.error) return Promise.reject(this.error);
    if (this.queued > 0 || this.queue.length) {
      const b = this.queue.shift()!;
      this.queued -= b.length;
      if (this.full && this.queued <= HIGH_WATER / 4) {
        this.full = false;
        this.onDrained();
      }
      return Promise.resolve({ value: b, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.failWaiter = reject;
    });
  }

  /** Nobody will read the rest (the reader stopped, or the hook answered before the dot): dropped. */
  discard(): void {
    this.ended = true;
    this.queue.length = 0;
    this.queued = 0;
    if (this.full) {
      this.full = false;
      this.onDrained();
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<Buffer> {
    return {
      next: () => this.next(),
      // The reader stopped early (it threw): the rest is dropped, the session reads on to the dot.
      return: () => {
        this.discard();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}
