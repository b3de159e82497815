/** Wires the email service: templates, the mailer chosen by configuration, the recipient limit and the Connect routes. */
import { mkdir } from "node:fs/promises";
import { EmailService } from "@mcsv/sdk";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { authPolicy } from "../shared/auth.js";
import { serverSettings } from "../shared/config.js";
import { runService, type RunningService } from "../shared/server.js";
import { SERVICES } from "../shared/topology.js";
import type { EmailConfig } from "./config.js";
import { createEmailHandlers } from "./handlers.js";
import type { Mailer } from "./mailer.js";
import { OutboxMailer } from "./outbox-mailer.js";
import { RecipientLimit } from "./recipient-limit.js";
import { ResendMailer } from "./resend-mailer.js";
import { EmailSender } from "./sender.js";
import { EmailTemplates } from "./templates.js";

export interface EmailServiceOverrides {
  logger?: Logger;
  mailer?: Mailer;
  templatesDir?: string;
}

/** Resend when an API key is configured, the dev outbox otherwise. */
export async function createMailer(config: EmailConfig): Promise<Mailer> {
  if (config.RESEND_API_KEY) {
    return new ResendMailer({ apiKey: config.RESEND_API_KEY, baseUrl: config.RESEND_BASE_URL, timeoutMs: config.RESEND_TIMEOUT_MS });
  }
  // Fail at start-up, not on the first email, when the outbox cannot be created.
  await mkdir(config.EMAIL_OUTBOX_DIR, { recursive: true });
  return new OutboxMailer(config.EMAIL_OUTBOX_DIR);
}

export async function startEmailService(config: EmailConfig, overrides: EmailServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.email.name;
  initMetrics(name);
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  const templates = await EmailTemplates.load(overrides.templatesDir);
  const mailer = overrides.mailer ?? (await createMailer(config));
  logger.info("email transport", {
    transport: mailer.transport,
    ...(mailer instanceof OutboxMailer ? { outbox: mailer.dir } : { resend_base_url: config.RESEND_BASE_URL ?? "https://api.resend.com" }),
  });
  const recipientLimit = new RecipientLimit(config.EMAIL_PER_RECIPIENT_PER_HOUR, 3_600_000);
  const sender = new EmailSender({ templates, mailer, recipientLimit, from: config.EMAIL_FROM, logger });
  return runService({
    name,
    port: config.EMAIL_PORT,
    ...serverSettings(config),
    logger,
    routes: (router) => router.service(EmailService, createEmailHandlers({ sender, logger })),
    auth: authPolicy({ internal: config }),
    // Named after the transport, so that /health/ready shows where emails go.
    readiness: { [`transport_${mailer.transport}`]: () => mailer.check() },
    // Requests are small; templates take a few KiB of variables at most.
    readMaxBytes: 256 * 1024,
  });
}
