/** The task list: every task the worker runs, by identifier, with its dependencies. */
import type { TaskName } from "../../shared/tasks.js";
import { cleanupStorageTask, type CleanupStorageDeps } from "./cleanup_storage.js";
import type { AnyTaskDefinition } from "./context.js";
import { convertImageTask, type ConvertImageDeps } from "./convert_image.js";
import { notifyClientTask, type NotifyClientDeps } from "./notify_client.js";
import { PRUNE_TASK, pruneJobsTask } from "./prune_jobs.js";
import { reportConversionFailedTask, type ReportConversionFailedDeps } from "./report_conversion_failed.js";
import { sendEmailTask, type SendEmailDeps } from "./send_email.js";

export type TaskDeps = SendEmailDeps &
  ConvertImageDeps &
  NotifyClientDeps &
  CleanupStorageDeps &
  ReportConversionFailedDeps & { ledger: Parameters<typeof pruneJobsTask>[0]["ledger"]; jobRetentionMs: number };

export type TaskDefinitions = Record<TaskName | typeof PRUNE_TASK, AnyTaskDefinition>;

export function createTaskDefinitions(deps: TaskDeps): TaskDefinitions {
  return {
    send_email: sendEmailTask(deps),
    convert_image: convertImageTask(deps),
    notify_client: notifyClientTask(deps),
    cleanup_storage: cleanupStorageTask(deps),
    report_conversion_failed: reportConversionFailedTask(deps),
    [PRUNE_TASK]: pruneJobsTask({ ledger: deps.ledger, retentionMs: deps.jobRetentionMs }),
  };
}
