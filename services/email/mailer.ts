/**
 * The delivery port: whatever hands a rendered email to the outside world. Adapters: Resend (resend-mailer.ts) and
 * the dev outbox (outbox-mailer.ts).
 *
 * Contract: `send` delivers at most one email per idempotency key, however often it is called, and returns the same
 * id for a repeat. It fails with a ConnectError whose code says whether a retry can help: unavailable,
 * deadline_exceeded, resource_exhausted or aborted (retry) versus invalid_argument or failed_precondition (do not).
 */
export interface OutgoingEmail {
  /** Sender mailbox, e.g. `mcsv <noreply@mcsv.dev>`. */
  from: string;
  /** Recipient address (bare; the greeting carries the name). */
  to: string;
  subject: string;
  html: string;
  text: string;
  /** Template name, for provider-side tagging. */
  type: string;
}

export interface Mailer {
  /** Label of the adapter in metrics and logs. */
  readonly transport: "resend" | "outbox";
  send(email: OutgoingEmail, idempotencyKey: string, signal?: AbortSignal): Promise<{ id: string }>;
  /** Resolves when the adapter can deliver (readiness); must not call a paid or remote API. */
  check(): Promise<void>;
}
