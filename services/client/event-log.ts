/**
 * The recent callbacks: a fixed-capacity ring that forgets the oldest event first, with an index of the ids it
 * holds so that a repeated callback is recognised (within the window it keeps) in constant time.
 */
export interface Identified {
  readonly id: string;
}

export class EventLog<T extends Identified> {
  private readonly slots: (T | undefined)[];
  private readonly ids = new Set<string>();
  /** Slot the next event goes into. */
  private next = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be a positive integer");
    this.slots = new Array<T | undefined>(capacity);
  }

  get size(): number {
    return this.ids.size;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }

  /** Adds the event unless one with its id is held; returns whether it was added. */
  add(event: T): boolean {
    if (this.ids.has(event.id)) return false;
    const evicted = this.slots[this.next];
    if (evicted) this.ids.delete(evicted.id);
    this.slots[this.next] = event;
    this.ids.add(event.id);
    this.next = (this.next + 1) % this.capacity;
    return true;
  }

  /** Up to `limit` events, newest first. */
  newest(limit: number): T[] {
    const out: T[] = [];
    const count = Math.min(limit, this.ids.size);
    for (let i = 1; i <= count; i++) out.push(this.slots[(this.next - i + this.capacity) % this.capacity]!);
    return out;
  }
}
