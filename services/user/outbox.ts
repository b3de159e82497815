/**
 * Transactional outbox: the jobs a change causes (welcome email, conversion, notifications, clean-up) are written in
 * the same transaction as the change, then handed to the job service by OutboxRelay: at once after the commit, and
 * again by a background loop for whatever the job service could not take (it was down, or slow). The rows that
 * commits hand over in the same turn of the event loop go together, in one claim, one EnqueueJobs call and one
 * update. Delivery is at least once; every job carries a job key, so the job service turns a repeat into a no-op.
 */
import { fromJson, toJson, type DescMessage, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { describeError, MAX_ERROR_TEXT_LENGTH } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { TASK_PAYLOADS, typedTask, type TaskName, type TaskPayload, type TypedTask } from "../shared/tasks.js";
import { injectTraceContext } from "../shared/tracing.js";
import { countOutboxPendingWith, outboxDeliveries } from "./metrics.js";

/** What can run a query: the pool, or a client inside a transaction. */
export interface Queryable {
  query<R extends object = Record<string, unknown>>(text: string, values?: unknown[]): Promise<{ rows: R[]; rowCount: number | null }>;
}

export interface OutboxJob {
  task: TaskName;
  jobKey: string;
  /** The task's payload (its message in shared/tasks.ts), as its canonical protobuf JSON. */
  args: Record<string, unknown>;
}

/** The outbox row of a job of task `task` with payload `payload` (stored as JSON: toJson of the message). */
export function outboxJob<T extends TaskName>(task: T, jobKey: string, payload: TaskPayload<T>): OutboxJob {
  return { task, jobKey, args: toJson(TASK_PAYLOADS[task].schema as DescMessage, payload as never) as JsonObject };
}

/**
 * The typed payload (EnqueueJobRequest.payload) of an outbox row's JSON; undefined when it is not exactly a payload
 * of its task, such as a row written before an upgrade in a shape the job service still upgrades (then the row goes
 * as the deprecated task and args).
 */
export function typedTaskOfRow(task: TaskName, args: Record<string, unknown>): TypedTask | undefined {
  const entry = TASK_PAYLOADS[task];
  if (!entry) return undefined;
  try {
    return typedTask(task, fromJson(entry.schema as DescMessage, args as JsonValue) as never);
  } catch {
    return undefined;
  }
}

export interface ClaimedJob extends OutboxJob {
  id: string;
  /** The tenant whose change caused the job. */
  tenant: string;
  attempts: number;
  traceContext?: Record<string, string> | undefined;
}

/** Hands jobs to the job service in one call, all or none; throws when they were not accepted. */
export type JobEnqueuer = (jobs: ClaimedJob[]) => Promise<void>;

/** The most jobs one call hands over (JobService.EnqueueJobs takes up to 100). */
const MAX_JOBS_PER_CALL = 100;

/**
 * Writes `jobs` of `tenant` within the caller's transaction and returns the ids of the rows written; a job whose key
 * is already in the outbox is skipped (the change that caused it happened before).
 */
export async function addToOutbox(db: Queryable, tenant: string, jobs: OutboxJob[]): Promise<string[]> {
  if (jobs.length === 0) return [];
  const trace = injectTraceContext();
  const { rows } = await db.query<{ id: string }>(
    `insert into mcsv_user.outbox (tenant, task, job_key, args, trace_context)
     select $1::text, * from unnest($2::text[], $3::text[], $4::jsonb[], $5::jsonb[])
     on conflict (job_key) do nothing
     returning id`,
    [
      tenant,
      jobs.map((j) => j.task),
      jobs.map((j) => j.jobKey),
      jobs.map((j) => JSON.stringify(j.args)),
      jobs.map(() => (Object.keys(trace).length > 0 ? JSON.stringify(trace) : null)),
    ],
  );
  return rows.map((r) => String(r.id));
}

export interface OutboxRelayOptions {
  pollMs: number;
  batchSize?: number;
  /** How long a claimed row belongs to this relay before another may take it (a crash mid-delivery). */
  claimSeconds?: number;
  /** Longest wait between two attempts of one job. */
  maxBackoffMs?: number;
}

interface ClaimedRow {
  id: string;
  tenant: string;
  task: TaskName;
  job_key: string;
  args: Record<string, unknown>;
  trace_context: Record<string, string> | null;
  attempts: number;
}

export class OutboxRelay {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private stopCounting: (() => void) | undefined;
  /** The rows handed over in this turn of the event loop, delivered together at its end. */
  private gathering: { ids: Set<string>; done: Promise<void> } | undefined;
  /** Batches of deliverNow in flight (stop waits for them). */
  private readonly delivering = new Set<Promise<void>>();
  private readonly batchSize: number;
  private readonly claimSeconds: number;
  private readonly maxBackoffMs: number;

  constructor(
    private readonly db: Queryable,
    private readonly enqueue: JobEnqueuer,
    private readonly logger: Logger,
    private readonly options: OutboxRelayOptions,
  ) {
    this.batchSize = options.batchSize ?? 50;
    this.claimSeconds = options.claimSeconds ?? 60;
    this.maxBackoffMs = options.maxBackoffMs ?? 60_000;
  }

  /** Starts the background loop. */
  start(): void {
    this.stopCounting = countOutboxPendingWith(() => this.pending());
    this.schedule(0);
  }

  /** Stops the loop and waits for the delivery in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.stopCounting?.();
    await this.running;
    // The batch still gathering is among them.
    await Promise.all(this.delivering);
  }

  /**
   * Tries to deliver the given rows now (right after the transaction that wrote them), together with the rows that
   * other commits hand over in the same turn of the event loop; resolves once that batch was tried. Never throws:
   * what is not delivered now stays in the outbox for the loop.
   */
  deliverNow(ids: string[]): Promise<void> {
    if (ids.length === 0) return Promise.resolve();
    if (!this.gathering) {
      const batch = new Set<string>();
      const done = new Promise<void>((resolve) =>
        setImmediate(() => {
          this.gathering = undefined;
          this.deliverIds([...batch]).then(resolve);
        }),
      );
      this.gathering = { ids: batch, done };
      this.delivering.add(done);
      void done.then(() => this.delivering.delete(done));
    }
    for (const id of ids) this.gathering.ids.add(id);
    return this.gathering.done;
  }

  private async deliverIds(ids: string[]): Promise<void> {
    try {
      await this.deliver(await this.claim(ids));
    } catch (error) {
      this.logger.warn("outbox delivery deferred", { error: describeError(error) });
    }
  }

  /** Jobs not yet accepted by the job service. */
  async pending(): Promise<number> {
    const { rows } = await this.db.query<{ n: string }>("select count(*) as n from mcsv_user.outbox where sent_at is null and dead_at is null");
    return Number(rows[0]?.n ?? 0);
  }

  /** One pass of the loop: every due row, batch after batch. Exposed for tests and for draining at shutdown. */
  async drainDue(): Promise<void> {
    for (;;) {
      const batch = await this.claim();
      await this.deliver(batch);
      if (batch.length < this.batchSize || this.stopped) break;
    }
    // Delivered rows are pruned by retention.ts (OUTBOX_RETENTION_DAYS).
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.drainDue()
        .catch((error: unknown) => {
          this.logger.warn("outbox relay pass failed", { error: describeError(error) });
        })
        .finally(() => {
          this.running = undefined;
          this.schedule(this.options.pollMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Claims due rows (or the given ones) so that no other relay delivers them meanwhile. */
  private async claim(ids?: string[]): Promise<ClaimedJob[]> {
    const { rows } = await this.db.query<ClaimedRow>(
      `update mcsv_user.outbox o
         set claimed_until = now() + make_interval(secs => $1), attempts = o.attempts + 1
       where o.id in (
         select id from mcsv_user.outbox
         where sent_at is null and dead_at is null and next_attempt_at <= now()
           and (claimed_until is null or claimed_until < now())
           and ($2::bigint[] is null or id = any($2::bigint[]))
         order by id
         limit $3
         for update skip locked)
       returning o.id, o.tenant, o.task, o.job_key, o.args, o.trace_context, o.attempts`,
      [this.claimSeconds, ids ?? null, ids?.length ?? this.batchSize],
    );
    return rows.map((r) => ({
      id: String(r.id),
      tenant: r.tenant,
      task: r.task,
      jobKey: r.job_key,
      args: r.args,
      traceContext: r.trace_context ?? undefined,
      attempts: r.attempts,
    }));
  }

  private async deliver(jobs: ClaimedJob[]): Promise<void> {
    const calls = [];
    for (let i = 0; i < jobs.length; i += MAX_JOBS_PER_CALL) calls.push(this.deliverBatch(jobs.slice(i, i + MAX_JOBS_PER_CALL)));
    await Promise.all(calls);
  }

  /** Hands `jobs` over in one call and records the outcome of each in one statement. */
  private async deliverBatch(jobs: ClaimedJob[]): Promise<void> {
    if (jobs.length === 0) return;
    try {
      await this.enqueue(jobs);
    } catch (error) {
      const refused = error instanceof ConnectError && error.code === Code.InvalidArgument;
      // The job service refused a payload: the others must not wait for it, so each goes on its own.
      if (refused && jobs.length > 1) return void (await Promise.all(jobs.map((job) => this.deliverBatch([job]))));
      const reason = describeError(error).slice(0, MAX_ERROR_TEXT_LENGTH);
      if (refused) {
        // Retrying cannot help, and the row must not block others. Any other failure (unreachable, overloaded, a
        // deployment in progress) is retried, however long it takes.
        const job = jobs[0]!;
        outboxDeliveries.inc({ task: job.task, outcome: "dead" });
        this.logger.error("job refused by the job service; outbox row set aside", { task: job.task, jobKey: job.jobKey, error: reason });
        await this.db.query("update mcsv_user.outbox set dead_at = now(), claimed_until = null, last_error = $2 where id = $1", [job.id, reason]);
        return;
      }
      for (const job of jobs) outboxDeliveries.inc({ task: job.task, outcome: "retry" });
      this.logger.warn("jobs not enqueued yet; will retry", { jobs: jobs.length, tasks: [...new Set(jobs.map((j) => j.task))], error: reason });
      // Each row backs off by its own attempts: 0.5 s, 1 s, 2 s, … up to maxBackoffMs.
      await this.db.query(
        `update mcsv_user.outbox
           set claimed_until = null, last_error = $2,
               next_attempt_at = now() + make_interval(secs => least($3::double precision, 500 * 2 ^ least(attempts - 1, 16)) / 1000)
         where id = any($1::bigint[])`,
        [jobs.map((j) => j.id), reason, this.maxBackoffMs],
      );
      return;
    }
    for (const job of jobs) outboxDeliveries.inc({ task: job.task, outcome: "sent" });
    await this.db.query("update mcsv_user.outbox set sent_at = now(), claimed_until = null, last_error = null where id = any($1::bigint[])", [jobs.map((j) => j.id)]);
  }
}
