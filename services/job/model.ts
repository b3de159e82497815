/** A job as the ledger knows it, and the errors of the job operations (mapped to Connect codes by the handlers). */
import type { JsonObject } from "@bufbuild/protobuf";

/** The life-cycle states of the original (Oban) API. */
export const JOB_STATES = ["available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled"] as const;
export type JobStateName = (typeof JOB_STATES)[number];

export const TERMINAL_STATES: ReadonlySet<JobStateName> = new Set(["completed", "discarded", "cancelled"]);

export interface JobAttemptError {
  attempt: number;
  error: string;
  at: Date;
}

export interface JobRecord {
  id: string;
  task: string;
  queue: string | null;
  args: JsonObject;
  priority: number;
  state: JobStateName;
  attempts: number;
  maxAttempts: number;
  errors: JobAttemptError[];
  jobKey: string | null;
  runAt: Date;
  insertedAt: Date;
  attemptedAt: Date | null;
  completedAt: Date | null;
  discardedAt: Date | null;
  cancelledAt: Date | null;
}

export interface EnqueueSpec {
  task: string;
  args: JsonObject;
  queue?: string | undefined;
  priority?: number | undefined;
  maxAttempts: number;
  runAt?: Date | undefined;
  jobKey?: string | undefined;
  /** W3C trace context handed to every attempt. */
  trace?: Record<string, string> | undefined;
}

export interface EnqueueResult {
  job: JobRecord;
  /** True when the job key matched an existing job and nothing was added. */
  duplicate: boolean;
}

export class JobNotFoundError extends Error {
  override name = "JobNotFoundError";
  constructor(readonly id: string) {
    super(`job ${id} not found`);
  }
}

/** The operation does not apply to a job in its current state. */
export class JobStateError extends Error {
  override name = "JobStateError";
  constructor(
    readonly job: JobRecord,
    message: string,
  ) {
    super(message);
  }
}

/** A job cannot be enqueued as asked; every bad field is named (JSON names of EnqueueJobRequest). */
export class InvalidJobError extends Error {
  override name = "InvalidJobError";
  constructor(readonly violations: { field: string; description: string }[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join("; "));
  }
}
