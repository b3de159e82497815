/**
 * The wrapper around every task: it keeps the ledger right, in order, before graphile-worker acts on the outcome.
 *
 * - At the start of an attempt it records the attempt; a job that already reached a terminal state (cancelled
 *   meanwhile, or completed before a crash kept graphile from deleting it) is not run again.
 * - On success it records completed, then returns; graphile deletes its job.
 * - On failure it records the error. A permanent error, or the last attempt, records discarded and returns
 *   normally, so graphile deletes its job instead of keeping a dead row; otherwise it rethrows and graphile
 *   retries with its exponential back-off. An attempt cut short by a shutdown does not count.
 *
 * graphile's events (job:success, job:error, …) are emitted without being awaited, so a crash could lose a
 * ledger write made there; the wrapper's writes happen before graphile moves on. A SIGKILL mid-attempt leaves
 * graphile's row locked (shown as executing) until a replica finds the dead worker and releases it, giving the
 * attempt back the same way (crash-recovery.ts).
 */
import type { JobHelpers, Task, TaskList } from "graphile-worker";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { withLogFields } from "../shared/logger.js";
import { withSpan, withTraceContext } from "../shared/tracing.js";
import type { EnqueueInput } from "./enqueue.js";
import { argsOfPayload, traceOfPayload, type JobLedger } from "./ledger.js";
import { startDurationTimer } from "../shared/metrics.js";
import { jobAttemptsTotal, jobDurationSeconds } from "./metrics.js";
import type { EnqueueResult } from "./model.js";
import { isPermanentFailure, PermanentJobError, type AnyTaskDefinition, type TaskContext } from "./tasks/context.js";

export interface ExecutionDeps {
  ledger: JobLedger;
  logger: Logger;
  enqueue(input: EnqueueInput): Promise<EnqueueResult>;
}

type Outcome = "completed" | "retry" | "discarded" | "cancelled" | "interrupted" | "skipped";

export function wrapTask(task: string, definition: AnyTaskDefinition, deps: ExecutionDeps): Task {
  const { ledger, logger } = deps;
  return async (payload: unknown, helpers: JobHelpers) => {
    const job = helpers.job;
    const claimed = await ledger.startAttempt({
      id: job.id,
      task: job.task_identifier,
      queue: (await helpers.getQueueName()) ?? null,
      payload,
      priority: job.priority,
      attempts: job.attempts,
      maxAttempts: job.max_attempts,
      runAt: job.run_at,
      createdAt: job.created_at,
    });
    const isLastAttempt = job.attempts >= job.max_attempts;
    const fields = { job_id: claimed.id, task, attempt: claimed.attempt, max_attempts: claimed.maxAttempts };

    await withLogFields(fields, () =>
      withTraceContext(traceOfPayload(payload), () => withSpan(`job ${task}`, { "mcsv.job.id": claimed.id, "mcsv.job.task": task, "mcsv.job.attempt": claimed.attempt }, async () => {
        if (claimed.state !== "pending") {
          logger.info(`job not run: already ${claimed.state}`);
          jobAttemptsTotal.inc({ task, outcome: "skipped" });
          return;
        }
        const stopTimer = startDurationTimer(jobDurationSeconds, { task });
        let outcome: Outcome = "completed";
        try {
          const decoded = definition.decode(argsOfPayload(payload));
          if (!decoded.ok) throw new PermanentJobError(`invalid arguments: ${decoded.violations.map((v) => `${v.field}: ${v.description}`).join("; ")}`);
          const ctx: TaskContext = {
            jobId: claimed.id,
            attempt: claimed.attempt,
            maxAttempts: claimed.maxAttempts,
            isLastAttempt,
            signal: helpers.abortSignal,
            logger,
            enqueue: deps.enqueue,
          };
          await definition.run(decoded.payload, ctx);
          await ledger.completeAttempt(claimed.id, claimed.attempt);
          logger.info("job completed");
        } catch (error) {
          // Until the ledger says otherwise, graphile retries (also when the ledger write itself fails).
          outcome = "retry";
          const message = describeError(error);
          if (helpers.abortSignal.aborted && !isPermanentFailure(error)) {
            outcome = "interrupted";
            await ledger.interruptAttempt(claimed.id, job.id, claimed.attempt, `interrupted by shutdown: ${message}`);
            logger.warn("job attempt interrupted by shutdown; it runs again later", { error: message });
            throw error;
          }
          const permanent = isPermanentFailure(error);
          const state = await ledger.failAttempt(claimed.id, claimed.attempt, message, permanent || isLastAttempt);
          if (state === "pending") {
            logger.warn("job attempt failed; it will be retried", { error: message });
            throw error;
          }
          outcome = state === "cancelled" ? "cancelled" : "discarded";
          if (outcome === "discarded") logger.error(permanent ? "job discarded: permanent error" : "job discarded: out of attempts", { error: message });
          else logger.info("job attempt failed after the job was cancelled", { error: message });
          // Returning normally lets graphile delete its job: the ledger holds the outcome, nothing retries.
        } finally {
          stopTimer({ outcome });
          jobAttemptsTotal.inc({ task, outcome });
        }
      })),
    );
  };
}

export function createTaskList(definitions: Record<string, AnyTaskDefinition>, deps: ExecutionDeps): TaskList {
  return Object.fromEntries(Object.entries(definitions).map(([name, definition]) => [name, wrapTask(name, definition, deps)]));
}
