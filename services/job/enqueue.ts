/**
 * Adding a job, for EnqueueJob and for tasks that enqueue follow-up work: every field is checked (the task's
 * arguments against its schema), the task's default attempts apply, and the caller's trace context goes along.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Violation } from "../shared/errors.js";
import { TASK_NAMES } from "../shared/tasks.js";
import { injectTraceContext } from "../shared/tracing.js";
import type { PoolClient } from "../shared/database.js";
import { argsOfPayload, enqueueInTransaction, type JobLedger } from "./ledger.js";
import { InvalidJobError, type EnqueueResult, type EnqueueSpec } from "./model.js";
import { decodeTaskArgs, DEFAULT_MAX_ATTEMPTS, isTaskName, upgradeLegacyArgs } from "./payloads.js";

export const MAX_ATTEMPTS_LIMIT = 25;
export const MAX_JOB_KEY_LENGTH = 200;
/** graphile-worker's limit on queue names. */
export const MAX_QUEUE_LENGTH = 128;
const SMALLINT = 32_767;

export interface EnqueueInput {
  task: string;
  args: JsonObject;
  /** Empty or unset: no named queue. */
  queue?: string | undefined;
  priority?: number | undefined;
  /** 0 or unset: the task's default. */
  maxAttempts?: number | undefined;
  runAt?: Date | undefined;
  /** Empty or unset: no deduplication. */
  jobKey?: string | undefined;
}

/** Every problem with `input`, each naming its field as EnqueueJobRequest spells it in JSON. */
export function checkEnqueueInput(input: EnqueueInput): Violation[] {
  const violations: Violation[] = [];
  if (!isTaskName(input.task)) {
    violations.push({ field: "task", description: `must be one of ${TASK_NAMES.join(", ")}` });
  } else {
    const decoded = decodeTaskArgs(input.task, argsOfPayload(input.args));
    if (!decoded.ok) violations.push(...decoded.violations);
  }
  if (input.queue !== undefined && input.queue.length > MAX_QUEUE_LENGTH) {
    violations.push({ field: "queue", description: `must be at most ${MAX_QUEUE_LENGTH} characters` });
  }
  if (input.queue && /[\p{Cc}]/u.test(input.queue)) violations.push({ field: "queue", description: "must not contain control characters" });
  if (input.priority !== undefined && (!Number.isInteger(input.priority) || Math.abs(input.priority) > SMALLINT)) {
    violations.push({ field: "priority", description: `must be an integer from -${SMALLINT} to ${SMALLINT}` });
  }
  if (input.maxAttempts !== undefined && input.maxAttempts !== 0 && !(Number.isInteger(input.maxAttempts) && input.maxAttempts >= 1 && input.maxAttempts <= MAX_ATTEMPTS_LIMIT)) {
    violations.push({ field: "maxAttempts", description: `must be from 1 to ${MAX_ATTEMPTS_LIMIT}, or 0 for the task's default` });
  }
  if (input.runAt !== undefined && Number.isNaN(input.runAt.getTime())) violations.push({ field: "runAt", description: "must be a valid time" });
  if (input.jobKey !== undefined && input.jobKey.length > MAX_JOB_KEY_LENGTH) {
    violations.push({ field: "jobKey", description: `must be at most ${MAX_JOB_KEY_LENGTH} characters` });
  }
  return violations;
}

/** The ledger's spec of a checked `input`; throws InvalidJobError listing every bad field. */
export function enqueueSpec(input: EnqueueInput, trace: Record<string, string> | undefined): EnqueueSpec {
  const violations = checkEnqueueInput(input);
  if (violations.length > 0 || !isTaskName(input.task)) throw new InvalidJobError(violations);
  return {
    task: input.task,
    // What is stored is the payload as it is now: a legacy one loses its links here (payloads.ts).
    args: upgradeLegacyArgs(input.task, argsOfPayload(input.args)) as typeof input.args,
    queue: input.queue || undefined,
    priority: input.priority ?? 0,
    maxAttempts: input.maxAttempts || DEFAULT_MAX_ATTEMPTS[input.task],
    runAt: input.runAt,
    jobKey: input.jobKey || undefined,
    trace,
  };
}

/** Adds the job (or finds the one with the same job key); throws InvalidJobError listing every bad field. */
export async function enqueueJob(ledger: JobLedger, input: EnqueueInput): Promise<EnqueueResult> {
  return ledger.enqueue(enqueueSpec(input, injectTraceContext()));
}

/**
 * Adds the job within the caller's transaction `client` (see enqueueInTransaction), continuing the trace `trace`
 * (the job it follows) rather than the caller's; throws InvalidJobError listing every bad field.
 */
export async function enqueueJobInTransaction(
  client: PoolClient,
  input: EnqueueInput,
  trace: Record<string, string> | undefined,
): Promise<{ id: string; duplicate: boolean }> {
  return enqueueInTransaction(client, enqueueSpec(input, trace));
}
