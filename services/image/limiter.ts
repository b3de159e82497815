/**
 * A counting semaphore: at most `limit` tasks run at once, at most `maxWaiting` others wait in arrival order, and any
 * more are refused at once (LimiterFullError): the backlog belongs to the caller's queue, not to this process. A
 * waiting task whose signal aborts (deadline passed, client gone) leaves the queue and rejects with the signal's
 * reason.
 */
export interface LimiterObserver {
  /** A task started waiting for a slot. */
  waiting?(): void;
  /** A task stopped waiting (it got a slot or gave up). */
  doneWaiting?(): void;
  /** A task took a slot. */
  acquired?(): void;
  /** A task gave its slot back. */
  released?(): void;
}

/** Every slot is taken and the queue is full. */
export class LimiterFullError extends Error {
  override name = "LimiterFullError";
}

interface Waiter {
  grant(): void;
}

export class ConcurrencyLimiter {
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    readonly limit: number,
    private readonly observer: LimiterObserver = {},
    readonly maxWaiting = Number.POSITIVE_INFINITY,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
    if (!(maxWaiting >= 0)) throw new RangeError(`maxWaiting must be 0 or more, got ${maxWaiting}`);
  }

  get active(): number {
    return this.running;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** Runs `task` once a slot is free; the slot is released however the task ends. */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal);
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.running < this.limit && this.queue.length === 0) {
      this.take();
      return Promise.resolve();
    }
    if (this.queue.length >= this.maxWaiting) {
      return Promise.reject(new LimiterFullError(`all ${this.limit} slots are busy and ${this.queue.length} tasks wait`));
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          this.observer.doneWaiting?.();
          this.take();
          resolve();
        },
      };
      const onAbort = () => {
        const index = this.queue.indexOf(waiter);
        if (index >= 0) this.queue.splice(index, 1);
        this.observer.doneWaiting?.();
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.queue.push(waiter);
      this.observer.waiting?.();
    });
  }

  private take(): void {
    this.running++;
    this.observer.acquired?.();
  }

  private release(): void {
    this.running--;
    this.observer.released?.();
    // Hand the slot straight to the next waiter, so a newcomer cannot overtake the queue.
    if (this.running < this.limit) this.queue.shift()?.grant();
  }
}
