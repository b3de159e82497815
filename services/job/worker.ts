/**
 * graphile-worker inside the job service process: its own pg.Pool (from createPool, which survives a Postgres
 * restart), no signal handlers of its own (runMain handles SIGTERM and calls drain), the crontab (hourly storage
 * sweep and ledger pruning), and its log lines routed to winston.
 */
import { Logger as GraphileLogger, parseCronItems, run, runMigrations, type Runner, type TaskList, type WorkerEvents } from "graphile-worker";
import type { Pool } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { PRUNE_TASK } from "./tasks/prune_jobs.js";

export interface WorkerOptions {
  pool: Pool;
  taskList: TaskList;
  logger: Logger;
  concurrency: number;
  pollIntervalMs: number;
  cron: boolean;
  /** After a graceful stop began, running tasks get their abort signal this much later. */
  abortAfterMs: number;
  /** graphile's local queue size (0: off) and completion batching delay (-1: off). */
  localQueueSize: number;
  completeBatchDelayMs: number;
  /** Receives graphile's events from the start (`pool:create` is emitted before run() resolves). */
  events?: WorkerEvents;
}

/** graphile's log lines through winston; its per-job success and failure lines are debug (the wrapper logs outcomes). */
export function graphileLogger(logger: Logger): GraphileLogger {
  return new GraphileLogger((scope) => (level, message, meta) => {
    const fields = { component: "graphile-worker", ...(scope.workerId ? { worker_id: scope.workerId } : {}) };
    // Job metadata (payloads) is never passed on: it may hold addresses.
    if (meta?.["success"] || meta?.["failure"]) return void logger.debug(message.split("\n")[0] ?? message, fields);
    switch (level as string) {
      case "error":
        return void logger.error(message, fields);
      case "warning":
        return void logger.warn(message, fields);
      case "info":
        return void logger.info(message, fields);
      default:
        return void logger.debug(message, fields);
    }
  });
}

/** The crontab: identifiers keep graphile from scheduling an entry twice across replicas. */
export function cronItems() {
  return parseCronItems([
    { task: "cleanup_storage", identifier: "cleanup_storage_sweep", match: "7 * * * *", payload: { sweep: true }, options: { backfillPeriod: 0, maxAttempts: 5 } },
    { task: PRUNE_TASK, identifier: PRUNE_TASK, match: "37 * * * *", options: { backfillPeriod: 0, maxAttempts: 3 } },
  ]);
}

/** graphile's own schema (graphile_worker), migrated under its own concurrency guard. */
export async function migrateGraphile(pool: Pool, logger: Logger): Promise<void> {
  await runMigrations({ pgPool: pool, logger: graphileLogger(logger) });
}

/** How long a stop waits for graphile's last writes after its workers have ended. */
const SETTLE_TIMEOUT_MS = 5_000;

/**
 * Resolves once no query of graphile's is in flight on `pool`. graphile 0.17 releases a worker before the write
 * that completes or fails its last job has finished (it does not await it); ending the pool earlier would lose
 * that write and leave the job locked until its lock expires.
 */
async function settled(pool: Pool, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((pool.totalCount > pool.idleCount || pool.waitingCount > 0) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export interface RunningWorker {
  runner: Runner;
  /** Stops taking jobs and waits for those in flight; after `timeoutMs` releases what is still running. */
  stop(timeoutMs: number): Promise<void>;
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const { logger } = options;
  const runner = await run({
    pgPool: options.pool,
    taskList: options.taskList,
    parsedCronItems: options.cron ? cronItems() : [],
    concurrency: options.concurrency,
    pollInterval: options.pollIntervalMs,
    noHandleSignals: true,
    logger: graphileLogger(logger),
    gracefulShutdownAbortTimeout: options.abortAfterMs,
    preset: {
      worker: {
        ...(options.localQueueSize > 1 ? { localQueue: { size: options.localQueueSize } } : {}),
        completeJobBatchDelay: options.completeBatchDelayMs,
      },
    },
    ...(options.events ? { events: options.events } : {}),
  });
  runner.promise.catch((error: unknown) => logger.error("job worker stopped with an error", { error: describeError(error) }));
  let stopping: Promise<void> | undefined;
  return {
    runner,
    stop(timeoutMs) {
      stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const timedOut = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs)));
        const result = await Promise.race([
          runner.stop().then(
            () => "stopped" as const,
            // Already stopped on its own (the error was logged above).
            () => "stopped" as const,
          ),
          timedOut,
        ]);
        clearTimeout(timer);
        if (result === "timeout") {
          // graphile marks the jobs still running as failed, so they run again soon instead of after the lock expires.
          logger.warn("jobs still running after the grace period; releasing them for a retry");
          await runner.kill().catch((error: unknown) => logger.error("forceful worker stop failed", { error: describeError(error) }));
        }
        await settled(options.pool, SETTLE_TIMEOUT_MS);
      })();
      return stopping;
    },
  };
}
