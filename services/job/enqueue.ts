/**
 * Adding a job, for EnqueueJob and for tasks that enqueue follow-up work: every field is checked (the task's
 * arguments against its schema), the task's default attempts apply, and the caller's trace context goes along.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import type { Violation } from "../shared/errors.js";
import { TASK_NAMES, TASK_PAYLOADS, taskOfCase, type TaskName, type TypedTask } from "../shared/tasks.js";
import { injectTraceContext } from "../shared/tracing.js";
import type { PoolClient } from "../shared/database.js";
import { argsOfPayload } from "./dispatcher.js";
import { enqueueInTransaction, type JobLedger } from "./ledger.js";
import { InvalidJobError, type EnqueueResult, type EnqueueSpec } from "./model.js";
import { argsAgree, argsOfTypedTask, checkTaskPayload, decodeTaskArgs, DEFAULT_MAX_ATTEMPTS, isTaskName, upgradeLegacyArgs } from "./payloads.js";

export const MAX_ATTEMPTS_LIMIT = 25;
export const MAX_JOB_KEY_LENGTH = 200;
/** graphile-worker's limit on queue names. */
export const MAX_QUEUE_LENGTH = 128;
const SMALLINT = 32_767;

export interface EnqueueInput {
  /** The task and its arguments, typed (EnqueueJobRequest.payload): the case names the task. */
  payload?: TypedTask | undefined;
  /** Deprecated form: the task's name (empty or unset with `payload`; if given, it must agree with it). */
  task?: string | undefined;
  /** Deprecated form: the task's arguments as JSON (empty or unset with `payload`; if given, they must agree). */
  args?: JsonObject | undefined;
  /** Empty or unset: no named queue. */
  queue?: string | undefined;
  priority?: number | undefined;
  /** 0 or unset: the task's default. */
  maxAttempts?: number | undefined;
  runAt?: Date | undefined;
  /** Empty or unset: no deduplication. */
  jobKey?: string | undefined;
  /** W3C trace context the job continues; empty or unset: the caller's. */
  traceContext?: Record<string, string> | undefined;
}

/** The task an input names: its payload's case, or the deprecated task name. */
export function taskOfInput(input: EnqueueInput): string {
  return input.payload ? taskOfCase(input.payload.case) : (input.task ?? "");
}

const CASES = TASK_NAMES.map((t) => TASK_PAYLOADS[t].case).join(", ");

/** The task and the arguments to store of `input` (either form), and every problem with them. */
function resolveTask(input: EnqueueInput): { task?: TaskName; args?: JsonObject; violations: Violation[] } {
  const violations: Violation[] = [];
  const givenArgs = input.args !== undefined && Object.keys(input.args).length > 0;
  if (input.payload) {
    const { case: field, value } = input.payload;
    const task = taskOfCase(field);
    violations.push(...checkTaskPayload(task, value as never, field));
    if (input.task && input.task !== task) {
      violations.push({ field: "task", description: `disagrees with ${field} (task ${task}): give the payload alone, or a task that agrees` });
    }
    if (givenArgs && !argsAgree(input.payload, input.args)) {
      violations.push({ field: "args", description: `disagrees with ${field}: give the payload alone, or args that agree` });
    }
    return { task, args: argsOfTypedTask(input.payload), violations };
  }
  if (!input.task) {
    violations.push({ field: "payload", description: `is required: one of ${CASES} (or the deprecated task and args)` });
    return { violations };
  }
  if (!isTaskName(input.task)) {
    violations.push({ field: "task", description: `must be one of ${TASK_NAMES.join(", ")}` });
    return { violations };
  }
  const args = argsOfPayload(input.args ?? {});
  const decoded = decodeTaskArgs(input.task, args);
  if (!decoded.ok) violations.push(...decoded.violations);
  // What is stored is the payload as it is now: a legacy one loses its links here (payloads.ts).
  return { task: input.task, args: upgradeLegacyArgs(input.task, args) as JsonObject, violations };
}

/** Every problem with `input`, each naming its field as EnqueueJobRequest spells it in JSON. */
export function checkEnqueueInput(input: EnqueueInput): Violation[] {
  return checkInput(input).violations;
}

function checkInput(input: EnqueueInput): { task?: TaskName; args?: JsonObject; violations: Violation[] } {
  const resolved = resolveTask(input);
  const { violations } = resolved;
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
  return resolved;
}

/** The ledger's spec of a checked `input`; throws InvalidJobError listing every bad field. */
export function enqueueSpec(input: EnqueueInput, trace: Record<string, string> | undefined): EnqueueSpec {
  const { task, args, violations } = checkInput(input);
  if (violations.length > 0 || !task || !args) throw new InvalidJobError(violations);
  return {
    task,
    args,
    queue: input.queue || undefined,
    priority: input.priority ?? 0,
    maxAttempts: input.maxAttempts || DEFAULT_MAX_ATTEMPTS[task],
    runAt: input.runAt,
    jobKey: input.jobKey || undefined,
    trace,
  };
}

/** The trace a job continues: the one it names, or the caller's. */
function traceOf(input: EnqueueInput): Record<string, string> {
  return input.traceContext && Object.keys(input.traceContext).length > 0 ? input.traceContext : injectTraceContext();
}

/** Adds the job (or finds the one with the same job key); throws InvalidJobError listing every bad field. */
export async function enqueueJob(ledger: Pick<JobLedger, "enqueue">, input: EnqueueInput): Promise<EnqueueResult> {
  return ledger.enqueue(enqueueSpec(input, traceOf(input)));
}

/** The most jobs one EnqueueJobs call adds. */
export const MAX_JOBS_PER_CALL = 100;

/**
 * Adds every job in one transaction, or none: throws InvalidJobError listing every bad field of every job, each
 * named jobs[i].field as EnqueueJobsRequest spells it.
 */
export async function enqueueJobs(ledger: Pick<JobLedger, "enqueueMany">, inputs: EnqueueInput[]): Promise<EnqueueResult[]> {
  if (inputs.length === 0 || inputs.length > MAX_JOBS_PER_CALL) {
    throw new InvalidJobError([{ field: "jobs", description: `must hold 1 to ${MAX_JOBS_PER_CALL} jobs` }]);
  }
  const specs: EnqueueSpec[] = [];
  const violations: Violation[] = [];
  inputs.forEach((input, i) => {
    try {
      specs.push(enqueueSpec(input, traceOf(input)));
    } catch (error) {
      if (!(error instanceof InvalidJobError)) throw error;
      violations.push(...error.violations.map((v) => ({ field: `jobs[${i}].${v.field}`, description: v.description })));
    }
  });
  if (violations.length > 0) throw new InvalidJobError(violations);
  return ledger.enqueueMany(specs);
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
