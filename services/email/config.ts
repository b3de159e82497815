/**
 * Email service configuration. With RESEND_API_KEY set, emails go out through Resend; without it they are written
 * as .eml files to a local outbox (development, and `npm start` on a laptop). In production the outbox is refused
 * unless EMAIL_OUTBOX_DIR names it: an empty key must not quietly turn every email into a file no one reads.
 */
import { resolve } from "node:path";
import { z } from "zod";
import addressparser from "nodemailer/lib/addressparser";
import { commonEnv, loadConfig, port, positiveInt } from "../shared/config.js";
import { SERVICES } from "../shared/topology.js";

/** A single mailbox such as `mcsv <noreply@mcsv.dev>` or `noreply@mcsv.dev`. */
const mailbox = z
  .string()
  .refine((value) => {
    const parsed = addressparser(value, { flatten: true });
    return !/[\r\n]/.test(value) && parsed.length === 1 && z.email().safeParse(parsed[0]?.address).success;
  }, "must be one address, e.g. `mcsv <noreply@mcsv.dev>`");

const resendApiKey = z.string().trim().min(1);

/**
 * Every variable the email service reads (docs/configuration.md is checked against it); RESEND_API_KEY is required
 * when the dev outbox is refused (production without EMAIL_OUTBOX_DIR).
 */
export function emailEnvShape(outboxRefused = false) {
  return {
    ...commonEnv,
    EMAIL_PORT: port(SERVICES.email.port),
    /** Selects the Resend transport; unset means the dev outbox (in production only with EMAIL_OUTBOX_DIR set). */
    RESEND_API_KEY: outboxRefused
      ? z.string({ error: "is required in production (set EMAIL_OUTBOX_DIR to use the dev outbox deliberately)" }).pipe(resendApiKey)
      : resendApiKey.optional(),
    /** Resend's API origin; set to a local sink in tests. */
    RESEND_BASE_URL: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).optional(),
    /** Deadline of one call to Resend; a call that takes longer counts as deadline_exceeded and is retried. */
    RESEND_TIMEOUT_MS: positiveInt(10_000),
    EMAIL_FROM: mailbox.default("mcsv <noreply@mcsv.dev>"),
    /** Root of local state; the outbox lives in `<MCSV_DATA_DIR>/outbox` unless EMAIL_OUTBOX_DIR says otherwise. */
    MCSV_DATA_DIR: z.string().default(".data"),
    EMAIL_OUTBOX_DIR: z.string().optional(),
    /** Emails to one recipient address per hour (sliding); repeats of an email already sent do not count. */
    EMAIL_PER_RECIPIENT_PER_HOUR: positiveInt(20),
  };
}

export function loadEmailConfig(env: NodeJS.ProcessEnv = process.env) {
  const outboxRefused = env["NODE_ENV"] === "production" && !env["EMAIL_OUTBOX_DIR"];
  const config = loadConfig(SERVICES.email.name, emailEnvShape(outboxRefused), env);
  return {
    ...config,
    RESEND_BASE_URL: config.RESEND_BASE_URL?.replace(/\/+$/, ""),
    EMAIL_OUTBOX_DIR: resolve(config.EMAIL_OUTBOX_DIR ?? `${config.MCSV_DATA_DIR}/outbox`),
  };
}

export type EmailConfig = ReturnType<typeof loadEmailConfig>;
