/** Configuration of the job service, validated once at start-up. */
import { z } from "zod";
import { callerEnv } from "../shared/auth.js";
import { boolean, callbackEnv, commonEnv, ConfigError, databaseEnv, internalCallsEnv, loadConfig, positiveInt, storageEnv, topologyEnv } from "../shared/config.js";

/** A positive number of hours or days; fractions allowed, so that tests can use a few seconds. */
const positiveNumber = (fallback: number) => z.coerce.number().positive().default(fallback);

export const jobEnv = {
  /** Jobs run at once by this process. */
  JOB_CONCURRENCY: positiveInt(8),
  /** How often idle workers look for jobs whose run_at has come (new jobs are announced at once by NOTIFY). */
  JOB_POLL_INTERVAL_MS: positiveInt(2_000),
  /**
   * graphile-worker's batching: its pool locks this many due dispatches in one query and hands them to its workers
   * (0: each worker asks for its own); completions of dispatches are written together after this many ms (-1: one
   * by one). A dispatch locked or completed late only delays its run: the ledger holds every job's state.
   */
  JOB_LOCAL_QUEUE_SIZE: z.coerce.number().int().min(0).max(1000).default(0),
  JOB_COMPLETE_BATCH_DELAY_MS: z.coerce.number().int().min(-1).max(10_000).default(-1),
  /** Finished jobs are kept in the ledger this long, then pruned; job keys deduplicate within this window. */
  JOB_RETENTION_DAYS: positiveNumber(30),
  /** How often this process renews the leases of its running attempts and its pools' heartbeat (and recovers expired leases, see leases.ts). */
  JOB_WORKER_HEARTBEAT_MS: positiveInt(5_000),
  /** A lease lasts this long past its last renewal, then its attempt is abandoned and the job dispatched again; a pool silent this long is dead. */
  JOB_WORKER_DEAD_AFTER_MS: positiveInt(30_000),
  /** Runs the hourly storage sweep and ledger pruning (off in tests that must not be surprised by them). */
  JOB_CRON_ENABLED: boolean(true),
  /**
   * A conversion's first attempt reports PROCESSING to the gateway only when it runs longer than this: a quicker one
   * goes from QUEUED to SUCCEEDED with one report instead of two, and none waits for a round trip before it starts.
   */
  PROCESSING_REPORT_AFTER_MS: z.coerce.number().int().min(0).default(500),
  /** Deadline of one ImageService.ConvertImage call, and of each page of an ImageService.ConvertDocument call. */
  CONVERT_TIMEOUT_MS: positiveInt(120_000),
  /** Deadline of the calls to the email, user and client services. */
  RPC_TIMEOUT_MS: positiveInt(30_000),
  /** Deadline of one POST to a client's callback URL. */
  CALLBACK_TIMEOUT_MS: positiveInt(10_000),
  /**
   * Lifetime of the PDF link presigned when the conversion-complete email, the client notification and the callback
   * are sent (SigV4 allows up to 7 days); never beyond the PDF's own retention.
   */
  NOTIFICATION_PDF_URL_TTL_SECONDS: z.coerce.number().int().min(60).max(604_800).default(604_800),
  /** How long the webhook signing secrets of a tenant, fetched from the gateway, are reused before asking again. */
  WEBHOOK_SECRETS_CACHE_MS: z.coerce.number().int().min(0).default(60_000),
  /** Uploads (uploads/) older than this are deleted by the sweep. */
  UPLOAD_RETENTION_HOURS: positiveNumber(24),
  /** PDFs (pdfs/) and originals (originals/) older than this are deleted by the sweep. */
  PDF_RETENTION_DAYS: positiveNumber(7),
};

/** Every variable the job service reads (docs/configuration.md is checked against it). */
export const jobEnvShape = { ...commonEnv, ...callerEnv, ...databaseEnv, ...storageEnv, ...topologyEnv, ...internalCallsEnv, ...callbackEnv, ...jobEnv };

export function loadJobConfig(env: NodeJS.ProcessEnv = process.env) {
  const config = loadConfig("job-svc", jobEnvShape, env);
  // A live process must be able to miss a beat or two without losing its leases.
  if (config.JOB_WORKER_DEAD_AFTER_MS < 2 * config.JOB_WORKER_HEARTBEAT_MS) {
    throw new ConfigError(
      `invalid configuration for job-svc:\n  - JOB_WORKER_DEAD_AFTER_MS: must be at least twice JOB_WORKER_HEARTBEAT_MS (${config.JOB_WORKER_HEARTBEAT_MS})`,
    );
  }
  return config;
}

export type JobConfig = ReturnType<typeof loadJobConfig>;

/** graphile-worker's own pool: a LISTEN connection plus one per job it runs at once, and one to spare. */
export function jobWorkerPoolSize(config: Pick<JobConfig, "JOB_CONCURRENCY">): number {
  return config.JOB_CONCURRENCY + 2;
}

/** Postgres connections one job service holds at most: its pool (the API and the ledger) and graphile-worker's. */
export function jobPostgresConnections(config: Pick<JobConfig, "DATABASE_POOL_MAX" | "JOB_CONCURRENCY">): number {
  return config.DATABASE_POOL_MAX + jobWorkerPoolSize(config);
}
