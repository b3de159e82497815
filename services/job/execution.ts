/**
 * The wrapper around every task: one attempt of a job, under its lease, with the ledger as the only record.
 *
 * - A dispatch claims its attempt in the ledger. A stale one (the job was dispatched again meanwhile) or one of a
 *   job that already ended does nothing, and graphile forgets it.
 * - The lease is renewed while the task runs (leases.ts), and an attempt whose lease was lost is told to stop. The
 *   outcome is written fenced by the dispatch: completed; failed, and dispatched again after the back-off or
 *   discarded (a permanent error, or the last attempt); or, cut short by a shutdown, given back and dispatched again
 *   at once; or, a callee busy (DeferredJobError), given back and dispatched again after its delay. A cancelled job
 *   stays cancelled.
 * - The wrapper returns normally in every case once the ledger holds the outcome, so graphile deletes its dispatch
 *   and never retries on its own. An outcome that cannot be written is retried while the lease lasts; after that the
 *   lease expires, and recovery dispatches the job again.
 * - A claim that cannot reach Postgres waits for it, until a shutdown. Throwing would not give the dispatch back:
 *   graphile cannot record the failure either (it does not retry a refused connection), so the dispatch would stay
 *   locked to this live worker pool for graphile's 4 hours, with no lease that recovery could find. On a shutdown
 *   it throws; the pool's registration then ages, and recovery has graphile release its locks.
 */
import type { JobHelpers, Task, TaskList } from "graphile-worker";
import { isDatabaseUnavailable } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { withLogFields } from "../shared/logger.js";
import { startDurationTimer } from "../shared/metrics.js";
import { withSpan, withTraceContext } from "../shared/tracing.js";
import { argsOfPayload, ticketOf, type Ticket } from "./dispatcher.js";
import type { EnqueueInput } from "./enqueue.js";
import type { Attempt, AttemptOutcome, JobLedger } from "./ledger.js";
import type { LeaseKeeper } from "./leases.js";
import { jobAttemptsTotal, jobDurationSeconds } from "./metrics.js";
import type { EnqueueResult } from "./model.js";
import { DeferredJobError, isPermanentFailure, PermanentJobError, type AnyTaskDefinition, type TaskContext } from "./tasks/context.js";

export interface ExecutionDeps {
  ledger: Pick<JobLedger, "claim" | "ticketOfUndispatched" | "succeed" | "fail" | "interrupt" | "defer">;
  leases: Pick<LeaseKeeper, "hold" | "leaseSeconds">;
  logger: Logger;
  enqueue(input: EnqueueInput): Promise<EnqueueResult>;
}

/**
 * Retries `op` while Postgres is unreachable: until `deadline` (epoch ms) would pass, or until `signal` aborts.
 * `onWait` hears the first failure that is retried.
 */
async function persistently<T>(op: () => Promise<T>, until: { deadline?: number; signal?: AbortSignal; onWait?: (error: unknown) => void }): Promise<T> {
  for (let delayMs = 100, waited = false; ; delayMs = Math.min(delayMs * 2, 2_000)) {
    try {
      return await op();
    } catch (error) {
      if (!isDatabaseUnavailable(error) || until.signal?.aborted || (until.deadline !== undefined && Date.now() + delayMs > until.deadline)) throw error;
      if (!waited) until.onWait?.(error);
      waited = true;
      await sleep(delayMs, until.signal);
    }
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** The ticket of a dispatch: from its payload, or for a job graphile got without one, from the ledger. */
async function ticketOfDispatch(deps: ExecutionDeps, payload: unknown, helpers: JobHelpers): Promise<Ticket | undefined> {
  const ticket = ticketOf(payload);
  if (ticket) return ticket;
  const { job } = helpers;
  return deps.ledger.ticketOfUndispatched(
    {
      id: job.id,
      task: job.task_identifier,
      queue: (await helpers.getQueueName()) ?? null,
      priority: job.priority,
      maxAttempts: job.max_attempts,
      runAt: job.run_at,
      createdAt: job.created_at,
    },
    argsOfPayload(payload),
  );
}

export function wrapTask(task: string, definition: AnyTaskDefinition, deps: ExecutionDeps): Task {
  const { ledger, leases, logger } = deps;
  return async (payload: unknown, helpers: JobHelpers) => {
    const claim = async () => {
      const ticket = await ticketOfDispatch(deps, payload, helpers);
      const claimed = ticket && (await ledger.claim(ticket, { graphileJobId: helpers.job.id, owner: helpers.job.locked_by ?? "", leaseSeconds: leases.leaseSeconds }));
      return { ticket, claimed };
    };
    const { ticket, claimed } = await persistently(claim, {
      signal: helpers.abortSignal,
      onWait: (error) => logger.warn("job dispatch not claimed: Postgres is out of reach; it waits for it", { task, graphile_job_id: helpers.job.id, error: describeError(error) }),
    });
    if (claimed === undefined || typeof claimed === "string") {
      logger.debug("dispatch not run", { job_id: ticket?.job, task, reason: claimed ?? "no ledger row" });
      jobAttemptsTotal.inc({ task, outcome: "skipped" });
      return;
    }
    const lease = leases.hold(claimed);
    try {
      await runAttempt(task, definition, deps, claimed, helpers.abortSignal, lease.signal);
    } finally {
      lease.release();
    }
  };
}

async function runAttempt(task: string, definition: AnyTaskDefinition, deps: ExecutionDeps, attempt: Attempt, shutdown: AbortSignal, leaseLost: AbortSignal): Promise<void> {
  const { ledger, leases, logger } = deps;
  const isLastAttempt = attempt.attempt >= attempt.maxAttempts;
  const fields = { job_id: attempt.id, task, attempt: attempt.attempt, max_attempts: attempt.maxAttempts };
  // Outcome writes are retried for half a lease: the lease is still renewed meanwhile.
  const write = (fn: () => Promise<AttemptOutcome>) => persistently(fn, { deadline: Date.now() + leases.leaseSeconds * 500 });
  // The task gives up on a shutdown, and when its lease is lost (its outcome would change nothing).
  const signal = AbortSignal.any([shutdown, leaseLost]);

  await withLogFields(fields, () =>
    withTraceContext(attempt.trace ?? undefined, () =>
      withSpan(`job ${task}`, { "mcsv.job.id": attempt.id, "mcsv.job.task": task, "mcsv.job.attempt": attempt.attempt }, async () => {
        const stopTimer = startDurationTimer(jobDurationSeconds, { task });
        let outcome: AttemptOutcome | "interrupted" | "deferred" | "lost" = "completed";
        try {
          let failure: unknown;
          try {
            const decoded = definition.decode(attempt.args);
            if (!decoded.ok) throw new PermanentJobError(`invalid arguments: ${decoded.violations.map((v) => `${v.field}: ${v.description}`).join("; ")}`);
            const ctx: TaskContext = {
              jobId: attempt.id,
              attempt: attempt.attempt,
              maxAttempts: attempt.maxAttempts,
              isLastAttempt,
              // Every attempt after the first comes from a later dispatch.
              redelivered: attempt.dispatch > 1,
              signal,
              logger,
              enqueue: deps.enqueue,
            };
            await definition.run(decoded.payload, ctx);
          } catch (error) {
            failure = error ?? new Error("the task failed");
          }
          if (failure === undefined) {
            outcome = await write(() => ledger.succeed(attempt));
            logger.info(outcome === "completed" ? "job completed" : `job attempt succeeded, but the job is ${outcome}`);
            return;
          }
          const message = describeError(failure);
          const permanent = isPermanentFailure(failure);
          if (leaseLost.aborted) {
            outcome = "superseded";
            logger.warn("job attempt stopped: it lost its lease, and the job went to another attempt", { error: message });
            return;
          }
          if (failure instanceof DeferredJobError) {
            outcome = await write(() => ledger.defer(attempt, failure.delaySeconds));
            if (outcome === "retry") outcome = "deferred";
            logger.info("job attempt deferred: a callee is busy; it runs again without using an attempt", { error: message, delay_s: failure.delaySeconds });
            return;
          }
          if (shutdown.aborted && !permanent) {
            outcome = await write(() => ledger.interrupt(attempt, `interrupted by shutdown: ${message}`));
            if (outcome === "retry") outcome = "interrupted";
            logger.warn("job attempt interrupted by shutdown; it runs again", { error: message });
            return;
          }
          outcome = await write(() => ledger.fail(attempt, message, permanent || isLastAttempt));
          if (outcome === "retry") logger.warn("job attempt failed; it will be retried", { error: message });
          else if (outcome === "discarded") logger.error(permanent ? "job discarded: permanent error" : "job discarded: out of attempts", { error: message });
          else logger.info(`job attempt failed; the job is ${outcome}`, { error: message });
        } catch (error) {
          // The ledger stayed out of reach: the lease expires and recovery dispatches the job again.
          outcome = "lost";
          logger.error("job outcome not recorded; the job runs again once its lease expires", { error: describeError(error) });
        } finally {
          stopTimer({ outcome });
          jobAttemptsTotal.inc({ task, outcome });
        }
      }),
    ),
  );
}

export function createTaskList(definitions: Record<string, AnyTaskDefinition>, deps: ExecutionDeps): TaskList {
  return Object.fromEntries(Object.entries(definitions).map(([name, definition]) => [name, wrapTask(name, definition, deps)]));
}
