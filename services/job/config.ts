/** Configuration of the job service, validated once at start-up. */
import { z } from "zod";
import { boolean, commonEnv, databaseEnv, loadConfig, positiveInt, storageEnv, topologyEnv } from "../shared/config.js";

/** A positive number of hours or days; fractions allowed, so that tests can use a few seconds. */
const positiveNumber = (fallback: number) => z.coerce.number().positive().default(fallback);

export const jobEnv = {
  /** Jobs run at once by this process. */
  JOB_CONCURRENCY: positiveInt(8),
  /** How often idle workers look for jobs whose run_at has come (new jobs are announced at once by NOTIFY). */
  JOB_POLL_INTERVAL_MS: positiveInt(2_000),
  /** Finished jobs are kept in the ledger this long, then pruned; job keys deduplicate within this window. */
  JOB_RETENTION_DAYS: positiveNumber(30),
  /** Runs the hourly storage sweep and ledger pruning (off in tests that must not be surprised by them). */
  JOB_CRON_ENABLED: boolean(true),
  /** Deadline of one ImageService.ConvertImage call. */
  CONVERT_TIMEOUT_MS: positiveInt(120_000),
  /** Deadline of the calls to the email, user and client services. */
  RPC_TIMEOUT_MS: positiveInt(30_000),
  /** Deadline of one POST to a client's callback URL. */
  CALLBACK_TIMEOUT_MS: positiveInt(10_000),
  /** Uploads (uploads/) older than this are deleted by the sweep. */
  UPLOAD_RETENTION_HOURS: positiveNumber(24),
  /** PDFs (pdfs/) and originals (originals/) older than this are deleted by the sweep. */
  PDF_RETENTION_DAYS: positiveNumber(7),
};

export function loadJobConfig(env: NodeJS.ProcessEnv = process.env) {
  return loadConfig("job-svc", { ...commonEnv, ...databaseEnv, ...storageEnv, ...topologyEnv, ...jobEnv }, env);
}

export type JobConfig = ReturnType<typeof loadJobConfig>;
