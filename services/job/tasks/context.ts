/** What a task gets besides its payload, and how it says that a failure is permanent. */
import { Code, ConnectError } from "@connectrpc/connect";
import { isPermanent } from "../../shared/errors.js";
import type { Logger } from "../../shared/logger.js";
import type { EnqueueInput } from "../enqueue.js";
import type { EnqueueResult } from "../model.js";
import type { Violation } from "../../shared/errors.js";

export interface TaskContext {
  /** Id of the job in the ledger (the id JobService reports). */
  jobId: string;
  /** This attempt's number, from 1. */
  attempt: number;
  maxAttempts: number;
  /** No retry follows if this attempt fails. */
  isLastAttempt: boolean;
  /** An earlier attempt of this job ran (failed, was interrupted, or its worker died): it may have done part of the work. */
  redelivered: boolean;
  /** Aborted when the process shuts down and the attempt should give up (it runs again later). */
  signal: AbortSignal;
  logger: Logger;
  /** Adds follow-up work through the ledger, like EnqueueJob. */
  enqueue(input: EnqueueInput): Promise<EnqueueResult>;
}

/** A job discarded without a final attempt of its own (its last attempt's lease expired, leases.ts): no task code saw it end. */
export interface DiscardedJob {
  /** Id of the job in the ledger. */
  jobId: string;
  /** Its last attempt's lease expired: the worker died, paused, or could not record the outcome (Postgres away). */
  cause: "lease_expired";
  /** Attempts counted, and the most it had. */
  attempts: number;
  maxAttempts: number;
  /** Attempts given back after their worker died (not counted in `attempts`). */
  givenBack: number;
  /** Attempts whose lease expired, all told (those given back included). */
  interruptions: number;
}

/** A task: how to decode its payload, and how to run it. Throwing fails the attempt. */
export interface TaskDefinition<P> {
  decode(args: unknown): { ok: true; payload: P } | { ok: false; violations: Violation[] };
  run(payload: P, ctx: TaskContext): Promise<void>;
  /**
   * What must still happen when the job is discarded without a final attempt of its own (a worker that dies on
   * every attempt): a follow-up job, added in the transaction that records the discard. Without a job key, one is
   * derived from the discarded job, so the follow-up is added once however often recovery runs.
   */
  onDiscarded?(payload: P, job: DiscardedJob): EnqueueInput | undefined;
}

/**
 * Any task's definition, for the task list. (Method syntax makes `run` bivariant, so every TaskDefinition<P> fits;
 * the runner only ever hands `run` what the same definition's `decode` returned.)
 */
export type AnyTaskDefinition = TaskDefinition<unknown>;

/**
 * Not a failure: a callee was busy (it answered unavailable with retry-after). The attempt is given back without
 * counting, and the job is dispatched again after `delaySeconds`: the backlog waits in the queue.
 */
export class DeferredJobError extends Error {
  override name = "DeferredJobError";
  constructor(
    message: string,
    readonly delaySeconds: number,
  ) {
    super(message);
  }
}

/** A failure that no retry can fix: the job is discarded at once. */
export class PermanentJobError extends Error {
  override name = "PermanentJobError";
}

/** The gateway's answer to a report about a conversion that already finished (failed_precondition): nothing is left to do. */
export function isConversionFinished(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.FailedPrecondition;
}

/** Whether `error` ends the job at once: a PermanentJobError, or a permanent Connect code from a callee. */
export function isPermanentFailure(error: unknown): boolean {
  return error instanceof PermanentJobError || isPermanent(error);
}
