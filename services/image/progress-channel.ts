/**
 * Hands a server stream the progress events of work that runs meanwhile: `push` queues an event (and resolves once
 * the stream has taken it, so the work never runs far ahead of a slow reader), `until(work)` yields the events in
 * order and ends when the work settles, all its events taken.
 */
export class ProgressChannel<T> {
  private readonly queued: Array<{ event: T; taken: () => void }> = [];
  private wake: (() => void) | undefined;

  push(event: T): Promise<void> {
    return new Promise((taken) => {
      this.queued.push({ event, taken });
      this.wake?.();
    });
  }

  async *until(work: Promise<unknown>): AsyncGenerator<T> {
    let settled = false;
    const done = work.then(
      () => void (settled = true),
      () => void (settled = true),
    );
    for (;;) {
      const next = this.queued.shift();
      if (next) {
        next.taken();
        yield next.event;
        continue;
      }
      if (settled) return;
      await Promise.race([done, new Promise<void>((resolve) => (this.wake = resolve))]);
      this.wake = undefined;
    }
  }
}
