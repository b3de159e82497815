/**
 * Sending one validated email: count it against its recipient's limit, render its template, hand it to the mailer
 * once per idempotency key.
 */
import type { Logger } from "../shared/logger.js";
import { startDurationTimer } from "../shared/metrics.js";
import { withSpan } from "../shared/tracing.js";
import type { Mailer } from "./mailer.js";
import { emailDeliverySeconds } from "./metrics.js";
import type { RecipientLimit } from "./recipient-limit.js";
import type { EmailTemplates } from "./templates.js";
import type { EmailRequest } from "./validation.js";

export interface EmailSenderDeps {
  templates: EmailTemplates;
  mailer: Mailer;
  recipientLimit: RecipientLimit;
  /** Sender mailbox, e.g. `mcsv <noreply@mcsv.dev>`. */
  from: string;
  logger: Logger;
  now?: () => Date;
}

export interface SentEmail {
  emailId: string;
  acceptedAt: Date;
  transport: Mailer["transport"];
}

export class EmailSender {
  private readonly now: () => Date;

  constructor(private readonly deps: EmailSenderDeps) {
    this.now = deps.now ?? (() => new Date());
  }

  async send(request: EmailRequest, signal?: AbortSignal): Promise<SentEmail> {
    const { mailer, logger } = this.deps;
    this.deps.recipientLimit.admit(request.userEmail, request.idempotencyKey);
    const rendered = this.deps.templates.render(request.template, {
      userName: request.userName,
      userEmail: request.userEmail,
      variables: request.variables,
    });
    const email = { from: this.deps.from, to: request.userEmail, type: request.template, ...rendered };
    const { id } = await withSpan(`email.deliver ${mailer.transport}`, { "mcsv.email.type": request.template, "mcsv.email.transport": mailer.transport }, async (span) => {
      const stop = startDurationTimer(emailDeliverySeconds, { type: request.template, transport: mailer.transport });
      const result = await mailer.send(email, request.idempotencyKey, signal);
      // Successful deliveries only, as the histogram's help says.
      stop();
      span.setAttribute("mcsv.email.id", result.id);
      return result;
    });
    // The address is personal data: the log names the user id and the email id only.
    logger.info("email sent", { type: request.template, transport: mailer.transport, email_id: id, user_id: request.userId || undefined });
    return { emailId: id, acceptedAt: this.now(), transport: mailer.transport };
  }
}
