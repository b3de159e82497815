/**
 * At most `limit` emails to one recipient per sliding window, so that no caller can make us mail one address over
 * and over. An email is counted once per idempotency key: a retry of an email already counted passes and counts
 * nothing, as does any repeat the mailer turns into a no-op.
 *
 * The counts live in this process: the email service keeps no database, so with several replicas the limit applies
 * per replica, and a restart forgets it. That bounds the abuse well enough; a shared store would be the next step.
 */
import { resourceExhausted } from "../shared/errors.js";

interface Counted {
  idempotencyKey: string;
  at: number;
}

export class RecipientLimit {
  /** Emails counted per recipient within the window, oldest first; the map is ordered by the latest admission. */
  private readonly sent = new Map<string, Counted[]>();

  constructor(
    readonly limit: number,
    readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Counts the email to `address`, or throws resource_exhausted (with `retry-after` in seconds) when over the limit. */
  admit(address: string, idempotencyKey: string): void {
    const now = this.now();
    this.forgetIdleRecipients(now);
    const recipient = recipientOf(address);
    const counted = (this.sent.get(recipient) ?? []).filter((c) => c.at > now - this.windowMs);
    if (counted.some((c) => c.idempotencyKey === idempotencyKey)) return;
    if (counted.length >= this.limit) {
      throw resourceExhausted(`too many emails to this address: at most ${this.limit} per ${this.windowMs / 1000} s`, (counted[0]!.at + this.windowMs - now) / 1000);
    }
    counted.push({ idempotencyKey, at: now });
    // Re-inserted, so that the map stays ordered by latest admission and idle recipients gather at its front.
    this.sent.delete(recipient);
    this.sent.set(recipient, counted);
  }

  /** Recipients held (for tests). */
  get size(): number {
    return this.sent.size;
  }

  private forgetIdleRecipients(now: number): void {
    for (const [recipient, counted] of this.sent) {
      if (counted[counted.length - 1]!.at > now - this.windowMs) break;
      this.sent.delete(recipient);
    }
  }
}

/** The mailbox an address delivers to, as far as counting goes: case and a `+tag` do not make another recipient. */
export function recipientOf(address: string): string {
  const at = address.lastIndexOf("@");
  const local = address.slice(0, at);
  const plus = local.indexOf("+");
  return `${plus > 0 ? local.slice(0, plus) : local}${address.slice(at)}`.toLowerCase();
}
