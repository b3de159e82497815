/**
 * The job payloads: the contract between the services that enqueue work (through JobService.EnqueueJob) and the
 * job service's tasks that run it. A payload carries only metadata and presigned URLs, never file contents.
 * Messages travel as their canonical protobuf JSON, so a task sends exactly what was enqueued.
 */
import { z } from "zod";

export const TASK_NAMES = ["send_email", "convert_image", "notify_client", "cleanup_storage", "report_conversion_failed"] as const;
export type TaskName = (typeof TASK_NAMES)[number];

/** W3C trace context of the enqueueing span, so that the task continues the same trace. */
export const traceCarrier = z.record(z.string(), z.string()).optional();

const json = z.record(z.string(), z.unknown());

export const taskPayloads = {
  /** `request` is a mcsv.v1.SendEmailRequest in JSON; `conversionId` links a conversion-complete email. */
  send_email: z.object({
    request: json,
    conversionId: z.string().optional(),
  }),
  /**
   * `request` is a mcsv.v1.ImageServiceConvertImageRequest in JSON (its imageUrl a presigned GET);
   * `objectKey` lets the task presign the original again when the URL expired before a retry.
   */
  convert_image: z.object({
    request: json,
    objectKey: z.string().min(1),
    imageUrlExpiresAt: z.iso.datetime(),
  }),
  /** Exactly one of `pdfReady` (mcsv.v1.NotifyPdfReadyRequest) and `emailSent` (mcsv.v1.NotifyEmailSentRequest). */
  notify_client: z
    .object({
      pdfReady: json.optional(),
      emailSent: json.optional(),
      /** Also POST the event as JSON here (already checked against the callback allowlist). */
      callbackUrl: z.url().optional(),
    })
    .refine((p) => (p.pdfReady === undefined) !== (p.emailSent === undefined), "exactly one of pdfReady and emailSent"),
  /** Delete one object (an original whose conversion succeeded), or with `sweep`, every expired object. */
  cleanup_storage: z
    .object({
      objectKey: z.string().optional(),
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
