/**
 * The job payloads: the contract between the services that enqueue work (through JobService.EnqueueJob) and the
 * job service's tasks that run it. A payload carries only metadata and object keys, never file contents and never
 * a presigned URL: a link is made by the task right before it is sent (e-mail, client notification, callback, the
 * image service's fetch), so no long-lived link sits in the outbox, the job ledger or the job API (the job service
 * drops any link a payload still carries before it stores it: services/job/payloads.ts).
 * Each payload is a message of the contract (mcsv.v1.SendEmailTask, …); it is stored as its canonical protobuf JSON,
 * so that a task sends exactly what was enqueued. The rules beyond the message's shape are in services/job/payloads.ts.
 */
import type { MessageShape } from "@bufbuild/protobuf";
import {
  CleanupStorageTaskSchema,
  ConvertImageTaskSchema,
  NotifyClientTaskSchema,
  ReportConversionFailedTaskSchema,
  SendEmailTaskSchema,
  type EnqueueJobRequest,
} from "@mcsv/sdk";

export const TASK_NAMES = ["send_email", "convert_image", "notify_client", "cleanup_storage", "report_conversion_failed"] as const;
export type TaskName = (typeof TASK_NAMES)[number];

/**
 * Each task's payload message (mcsv.v1.SendEmailTask, …, in proto/mcsv/v1/job.proto) and its case in the `payload`
 * oneof of EnqueueJobRequest and Job. A payload's canonical JSON is what the job ledger and the outbox store.
 */
export const TASK_PAYLOADS = {
  send_email: { case: "sendEmail", schema: SendEmailTaskSchema },
  convert_image: { case: "convertImage", schema: ConvertImageTaskSchema },
  notify_client: { case: "notifyClient", schema: NotifyClientTaskSchema },
  cleanup_storage: { case: "cleanupStorage", schema: CleanupStorageTaskSchema },
  report_conversion_failed: { case: "reportConversionFailed", schema: ReportConversionFailedTaskSchema },
} as const;

/** The payload message of task `T`. */
export type TaskPayload<T extends TaskName> = MessageShape<(typeof TASK_PAYLOADS)[T]["schema"]>;

/** The `payload` oneof of EnqueueJobRequest (and Job) with a case set. */
export type TypedTask = Exclude<EnqueueJobRequest["payload"], { case: undefined }>;
export type TaskCase = TypedTask["case"];

/** The task a oneof case names. */
export function taskOfCase(c: TaskCase): TaskName {
  return TASK_NAMES.find((name) => TASK_PAYLOADS[name].case === c)!;
}

/** The oneof value of a payload of task `task`. */
export function typedTask<T extends TaskName>(task: T, value: TaskPayload<T>): TypedTask {
  return { case: TASK_PAYLOADS[task].case, value } as TypedTask;
}

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
