/**
 * The callbacks the workflows send to "the client", kept as ClientEvents in a bounded log. Each event's id is
 * derived from its content, so a callback delivered twice (a retried job) is recorded once. A conversion's PDF link
 * is not kept: it is a bearer credential for the file, and what the log holds is shown by the pages and ListEvents.
 */
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  ClientEventSchema,
  ConversionState,
  NotifyEmailSentRequestSchema,
  NotifyPdfReadyRequestSchema,
  type ClientEvent,
  type NotifyEmailSentRequest,
  type NotifyPdfReadyRequest,
} from "@mcsv/sdk";
import type { EventLog } from "./event-log.js";

export type EventKind = "pdf_ready" | "email_sent";

/** `pdf_ready:<conversion id>:<succeeded|failed>`: one event per conversion outcome. */
export function pdfReadyEventId(req: NotifyPdfReadyRequest): string {
  const c = req.conversion!;
  return `pdf_ready:${c.id}:${ConversionState[c.state].toLowerCase()}`;
}

/**
 * `email_sent:<email id>` for an email the provider accepted; for a failure without an id, a hash of the whole
 * callback (a retried job sends the same payload byte for byte).
 */
export function emailSentEventId(req: NotifyEmailSentRequest): string {
  if (req.emailId) return `email_sent:${req.emailId}`;
  const digest = createHash("sha256").update(toBinary(NotifyEmailSentRequestSchema, req)).digest("hex").slice(0, 32);
  return `email_sent:unsent:${digest}`;
}

export class CallbackInbox {
  constructor(
    private readonly log: EventLog<ClientEvent>,
    private readonly now: () => Date = () => new Date(),
  ) {}

  get size(): number {
    return this.log.size;
  }

  /** Records the callback; false when the same event is already held. The request must be valid. */
  recordPdfReady(req: NotifyPdfReadyRequest): boolean {
    const kept = create(NotifyPdfReadyRequestSchema, { conversion: { ...req.conversion!, pdfUrl: "", pdfUrlExpiresAt: undefined } });
    return this.log.add(create(ClientEventSchema, { id: pdfReadyEventId(req), receivedAt: timestampFromDate(this.now()), event: { case: "pdfReady", value: kept } }));
  }

  recordEmailSent(req: NotifyEmailSentRequest): boolean {
    return this.log.add(create(ClientEventSchema, { id: emailSentEventId(req), receivedAt: timestampFromDate(this.now()), event: { case: "emailSent", value: req } }));
  }

  /** Up to `limit` events, newest first. */
  recent(limit: number): ClientEvent[] {
    return this.log.newest(limit);
  }
}
