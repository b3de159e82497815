/**
 * A counting semaphore: at most `limit` tasks run at once, the others wait in arrival order. A waiting task whose
 * signal aborts (deadline passed, client gone) leaves the queue and rejects with the signal's reason.
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

interface Waiter {
  grant(): void;
}

export class ConcurrencyLimiter {
  private running = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    readonly limit: number,
    private readonly observer: LimiterObserver = {},
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
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
