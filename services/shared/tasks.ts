/**
 * The job payloads: the contract between the services that enqueue work (through JobService.EnqueueJob) and the
 * job service's tasks that run it. A payload carries only metadata and object keys, never file contents and never
 * a presigned URL: a link is made by the task right before it is sent (e-mail, client notification, callback, the
 * image service's fetch), so no long-lived link sits in the outbox, the job ledger or the job API (the job service
 * drops any link a payload still carries before it stores it: services/job/payloads.ts).
 * Messages travel as their canonical protobuf JSON, so a task sends exactly what was enqueued.
 */
import { z } from "zod";

export const TASK_NAMES = ["send_email", "convert_image", "notify_client", "cleanup_storage", "report_conversion_failed"] as const;
export type TaskName = (typeof TASK_NAMES)[number];

/** W3C trace context of the enqueueing span, so that the task continues the same trace. */
export const traceCarrier = z.record(z.string(), z.string()).optional();

const json = z.record(z.string(), z.unknown());

/** A stored PDF that a task links to: presigned when the task sends, never kept as a URL. */
export const pdfObject = z.object({
  key: z.string().regex(/^pdfs\/[^/]+\.pdf$/, "must be a key under pdfs/"),
  /** The download name (Content-Disposition of the link). */
  filename: z.string().min(1).max(255),
  /** When the storage sweep may delete the PDF: no link outlives it. */
  expiresAt: z.iso.datetime().optional(),
  /**
   * Links to it are signed as of this instant (the conversion's end) and live NOTIFICATION_PDF_URL_TTL_SECONDS from
   * then, so that every attempt of a job sends the same link: an email retried after Resend took it must carry the
   * same body under its idempotency key, and a callback receiver sees the same event. Unset: from the attempt.
   */
  linkedAt: z.iso.datetime().optional(),
});

export const taskPayloads = {
  /**
   * `request` is a mcsv.v1.SendEmailRequest in JSON; `conversionId` links a conversion-complete email. With `pdf`,
   * the task adds the variables pdf_url and pdf_url_expires_at (a link presigned at send time).
   */
  send_email: z.object({
    request: json,
    conversionId: z.string().optional(),
    pdf: pdfObject.optional(),
  }),
  /**
   * `request` is a mcsv.v1.ImageServiceConvertImageRequest in JSON without its imageUrl: the task presigns the
   * original (`objectKey`, under originals/) right before it calls the image service.
   */
  convert_image: z.object({
    request: json,
    objectKey: z.string().regex(/^originals\/[^/]+$/, "must be a key under originals/"),
  }),
  /**
   * Exactly one of `pdfReady` (mcsv.v1.NotifyPdfReadyRequest) and `emailSent` (mcsv.v1.NotifyEmailSentRequest).
   * With `pdf`, the task fills the conversion's pdf_url (presigned at send time). `tenant` names whose secrets sign
   * the callback ('default' when absent).
   */
  notify_client: z
    .object({
      pdfReady: json.optional(),
      emailSent: json.optional(),
      /** Also POST the event as JSON here (already checked against the callback allowlist). */
      callbackUrl: z.url().optional(),
      pdf: pdfObject.optional(),
      tenant: z.string().min(1).max(63).optional(),
    })
    .refine((p) => (p.pdfReady === undefined) !== (p.emailSent === undefined), "exactly one of pdfReady and emailSent"),
  /** Delete one object (an original whose conversion succeeded), or with `sweep`, every expired object. */
  cleanup_storage: z
    .object({
      objectKey: z.string().refine(isOwnedObjectKey, "must be an object key under uploads/, originals/ or pdfs/").optional(),
      sweep: z.boolean().optional(),
    })
    .refine((p) => Boolean(p.objectKey) !== Boolean(p.sweep), "exactly one of objectKey and sweep"),
  /**
   * Tell the gateway that a conversion failed (NotifyImageConverted FAILED with `error`): enqueued by the job service
   * when a convert_image job ended without being able to say so itself (its worker died on every attempt).
   */
  report_conversion_failed: z.object({
    conversionId: z.string().min(1),
    error: z.string().min(1).max(2_000),
  }),
} satisfies Record<TaskName, z.ZodType>;

export type TaskPayload<T extends TaskName> = z.infer<(typeof taskPayloads)[T]>;

/** Job keys: one job per logical piece of work, however often the request that causes it is repeated. */
export const jobKeys = {
  welcomeEmail: (userId: string) => `send_email:welcome:${userId}`,
  conversionEmail: (conversionId: string) => `send_email:conversion_complete:${conversionId}`,
  convertImage: (conversionId: string) => `convert_image:${conversionId}`,
  pdfReady: (conversionId: string) => `notify_client:pdf_ready:${conversionId}`,
  emailSent: (idempotencyKey: string) => `notify_client:email_sent:${idempotencyKey}`,
  cleanupOriginal: (conversionId: string) => `cleanup_storage:${conversionId}`,
  conversionFailed: (conversionId: string) => `report_conversion_failed:${conversionId}`,
};

/** Object keys are deterministic, so that a retried write overwrites instead of duplicating. */
export const objectKeys = {
  upload: (uploadId: string) => `uploads/${uploadId}`,
  original: (conversionId: string) => `originals/${conversionId}`,
  pdf: (conversionId: string) => `pdfs/${conversionId}.pdf`,
};

/** The prefixes of objectKeys: the only objects mcsv writes, and so the only ones cleanup_storage may delete. */
export const OWNED_PREFIXES = ["uploads/", "originals/", "pdfs/"] as const;

/** One object directly under an owned prefix (no deeper path, no dot segments). */
export function isOwnedObjectKey(key: string): boolean {
  return /^(uploads|originals|pdfs)\/(?!\.\.?$)[\w.-]{1,200}$/.test(key);
}
