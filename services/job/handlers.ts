/** JobService over Connect: request checks, the mapping to and from the ledger's records, and error codes. */
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { JobErrorSchema, JobSchema, JobService, JobState, QueueStatsSchema, type EnqueueJobRequest, type Job } from "@mcsv/sdk";
import { invalidArgument, Violations, type Violation } from "../shared/errors.js";
import type { EnqueueInput } from "./enqueue.js";
import type { JobLedger } from "./ledger.js";
import { typedTaskOfArgs } from "./payloads.js";
import { InvalidJobError, JOB_STATES, JobNotFoundError, JobStateError, type EnqueueResult, type JobRecord, type JobStateName } from "./model.js";

export interface JobHandlerDeps {
  ledger: Pick<JobLedger, "get" | "list" | "counts" | "cancel" | "retry">;
  enqueue(input: EnqueueInput): Promise<EnqueueResult>;
  enqueueMany(inputs: EnqueueInput[]): Promise<EnqueueResult[]>;
}

/** The job an EnqueueJobRequest asks for, and the problems only the request shows (its run_at). */
function inputOf(req: EnqueueJobRequest): { input: EnqueueInput; violations: Violation[] } {
  let runAt: Date | undefined;
  const violations: Violation[] = [];
  if (req.runAt) {
    runAt = timestampDate(req.runAt);
    if (Number.isNaN(runAt.getTime())) violations.push({ field: "runAt", description: "must be a valid time" });
  }
  const input: EnqueueInput = {
    payload: req.payload.case ? req.payload : undefined,
    // The deprecated form, still accepted (and checked against the payload when both are given).
    task: req.task,
    args: req.args,
    queue: req.queue,
    priority: req.priority,
    maxAttempts: req.maxAttempts,
    runAt,
    jobKey: req.jobKey,
    traceContext: req.traceContext,
  };
  return { input, violations };
}

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;
const MAX_ID = 9_223_372_036_854_775_807n;

const STATE_TO_PROTO: Record<JobStateName, JobState> = {
  available: JobState.AVAILABLE,
  scheduled: JobState.SCHEDULED,
  executing: JobState.EXECUTING,
  retryable: JobState.RETRYABLE,
  completed: JobState.COMPLETED,
  discarded: JobState.DISCARDED,
  cancelled: JobState.CANCELLED,
};
const PROTO_TO_STATE = new Map<JobState, JobStateName>(JOB_STATES.map((s) => [STATE_TO_PROTO[s], s]));

const ts = (date: Date | null) => (date ? timestampFromDate(date) : undefined);

export function toJobMessage(job: JobRecord): Job {
  return create(JobSchema, {
    id: job.id,
    task: job.task,
    queue: job.queue ?? "",
    args: job.args,
    priority: job.priority,
    state: STATE_TO_PROTO[job.state],
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    errors: job.errors.map((e) => create(JobErrorSchema, { attempt: e.attempt, error: e.error, at: timestampFromDate(e.at) })),
    jobKey: job.jobKey ?? "",
    // The same arguments, typed: Job.payload is EnqueueJobRequest.payload's oneof, case for case.
    payload: typedTaskOfArgs(job.task, job.args) ?? { case: undefined },
    runAt: ts(job.runAt),
    insertedAt: ts(job.insertedAt),
    attemptedAt: ts(job.attemptedAt),
    completedAt: ts(job.completedAt),
    discardedAt: ts(job.discardedAt),
    cancelledAt: ts(job.cancelledAt),
  });
}

/** A job id is the ledger's positive bigint, as a decimal string. */
function checkId(id: string): string {
  if (!/^[1-9]\d{0,18}$/.test(id) || BigInt(id) > MAX_ID) {
    throw invalidArgument([{ field: "id", description: id ? "must be a job id (a positive integer)" : "is required" }]);
  }
  return id;
}

/** The page token: where the next page starts and which filters it belongs to, base64url-encoded. */
interface PageToken {
  before: string;
  filters: string;
}

function filterFingerprint(task: string, queue: string, states: JobStateName[]): string {
  return createHash("sha256").update(JSON.stringify([task, queue, [...states].sort()])).digest("base64url").slice(0, 16);
}

function decodePageToken(token: string): PageToken | undefined {
  try {
    const parsed = JSON.parse(Buffer.from(token, "base64url").toString("utf8")) as Partial<PageToken>;
    if (typeof parsed.before === "string" && /^[1-9]\d{0,18}$/.test(parsed.before) && typeof parsed.filters === "string") {
      return { before: parsed.before, filters: parsed.filters };
    }
  } catch {
    // Falls through: not a token this service made.
  }
  return undefined;
}

function encodePageToken(token: PageToken): string {
  return Buffer.from(JSON.stringify(token)).toString("base64url");
}

function toConnectError(error: unknown): unknown {
  if (error instanceof ConnectError) return error;
  if (error instanceof InvalidJobError) return invalidArgument(error.violations);
  if (error instanceof JobNotFoundError) return new ConnectError(error.message, Code.NotFound);
  if (error instanceof JobStateError) return new ConnectError(error.message, Code.FailedPrecondition);
  return error;
}

async function mapErrors<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toConnectError(error);
  }
}

export function createJobHandlers(deps: JobHandlerDeps): ServiceImpl<typeof JobService> {
  const { ledger } = deps;
  return {
    enqueueJob: (req) =>
      mapErrors(async () => {
        const { input, violations } = inputOf(req);
        if (violations.length > 0) throw invalidArgument(violations);
        const { job, duplicate } = await deps.enqueue(input);
        return { job: toJobMessage(job), duplicate };
      }),

    enqueueJobs: (req) =>
      mapErrors(async () => {
        const requested = req.jobs.map(inputOf);
        const violations = requested.flatMap(({ violations }, i) => violations.map((v) => ({ field: `jobs[${i}].${v.field}`, description: v.description })));
        if (violations.length > 0) throw invalidArgument(violations);
        const results = await deps.enqueueMany(requested.map((r) => r.input));
        return { results: results.map(({ job, duplicate }) => ({ job: toJobMessage(job), duplicate })) };
      }),

    getJobStatus: (req) => mapErrors(async () => ({ job: toJobMessage(await ledger.get(checkId(req.id))) })),

    listJobs: (req) =>
      mapErrors(async () => {
        const violations = new Violations();
        const states: JobStateName[] = [];
        for (const [i, s] of req.states.entries()) {
          if (s === JobState.UNSPECIFIED) continue;
          const name = PROTO_TO_STATE.get(s);
          if (name) states.push(name);
          else violations.add(`states[${i}]`, `unknown job state ${s}`);
        }
        violations.check(req.pageSize >= 0 && req.pageSize <= MAX_PAGE_SIZE, "pageSize", `must be from 1 to ${MAX_PAGE_SIZE}, or 0 for ${DEFAULT_PAGE_SIZE}`);
        const filters = filterFingerprint(req.task, req.queue, states);
        let before: string | undefined;
        if (req.pageToken) {
          const token = decodePageToken(req.pageToken);
          if (!token) violations.add("pageToken", "is not a token from a previous ListJobs response");
          else if (token.filters !== filters) violations.add("pageToken", "belongs to a listing with other filters");
          else before = token.before;
        }
        violations.throwIfAny();
        const limit = req.pageSize || DEFAULT_PAGE_SIZE;
        const jobs = await ledger.list({ task: req.task || undefined, queue: req.queue || undefined, states, beforeId: before, limit: limit + 1 });
        const page = jobs.slice(0, limit);
        const last = page.at(-1);
        return {
          jobs: page.map(toJobMessage),
          nextPageToken: jobs.length > limit && last ? encodePageToken({ before: last.id, filters }) : "",
        };
      }),

    cancelJob: (req) => mapErrors(async () => ({ job: toJobMessage(await ledger.cancel(checkId(req.id))) })),

    retryJob: (req) => mapErrors(async () => ({ job: toJobMessage(await ledger.retry(checkId(req.id))) })),

    getQueueStats: () =>
      mapErrors(async () => {
        const byQueueAndTask = new Map<string, ReturnType<typeof create<typeof QueueStatsSchema>>>();
        for (const { queue, task, state, count } of await ledger.counts()) {
          const key = JSON.stringify([queue ?? "", task]);
          let stats = byQueueAndTask.get(key);
          if (!stats) byQueueAndTask.set(key, (stats = create(QueueStatsSchema, { queue: queue ?? "", task })));
          stats[state] += BigInt(count);
        }
        return { queues: [...byQueueAndTask.values()] };
      }),
  };
}
