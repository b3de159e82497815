/** Waiting for something that happens asynchronously, without timing assertions: the deadline is generous. */

const POLL_MS = 50;

const show = (value: unknown) => JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v));

/**
 * Polls until the awaited thing happened, or fails after `timeoutMs` (60 s unless given). Two forms:
 * - `eventually(probe, what)`: `probe` returns undefined until it has its answer (a thrown error counts as not yet);
 *   the failure names `what`, and the last error;
 * - `eventually(read, done)`: `read` returns the current value until `done` holds for it; the failure shows the
 *   last value read.
 */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs?: number): Promise<T>;
export async function eventually<T>(read: () => Promise<T> | T, done: (value: T) => boolean, timeoutMs?: number): Promise<T>;
export async function eventually<T>(poll: () => Promise<T | undefined> | T | undefined, until: string | ((value: T) => boolean), timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  if (typeof until === "function") {
    for (;;) {
      const value = (await poll()) as T;
      if (until(value)) return value;
      if (Date.now() > deadline) throw new Error(`condition not reached within ${timeoutMs} ms; last value: ${show(value)}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await poll();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  throw new Error(`timed out waiting for ${until}${last ? `: ${String(last)}` : ""}`);
}
