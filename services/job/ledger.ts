/**
 * The job ledger (mcsv_job.jobs) next to graphile-worker's queue, in one database.
 *
 * graphile-worker deletes a job once it has run, so the ledger keeps every job for the API: a row is inserted in the
 * same transaction as graphile's job (`graphile_worker.add_job`), so neither exists without the other. While a row
 * is 'pending', its live state is read from graphile's row (locked → executing, out of attempts → discarded, run_at
 * ahead → retryable or scheduled, else available); the terminal states are written here by the task wrapper
 * (see execution.ts) and by CancelJob, before graphile forgets the job.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";
import {
  JobNotFoundError,
  JobStateError,
  TERMINAL_STATES,
  type EnqueueResult,
  type EnqueueSpec,
  type JobAttemptError,
  type JobRecord,
  type JobStateName,
} from "./model.js";

/** Payload keys that the job service adds to graphile's payload and that are no task argument. */
export const TRACE_KEY = "_trace";
const CRON_KEY = "_cron";

/** Longest error message kept per attempt. */
const MAX_ERROR_LENGTH = 2_000;

/** The state a job is in, from the ledger row `l` and graphile's row `g` (joined only while pending). */
const STATE = `
  case
    when l.state <> 'pending' then l.state
    when g.id is null then 'discarded'
    when g.locked_at is not null then 'executing'
    when g.attempts >= g.max_attempts then 'discarded'
    when g.run_at > now() then (case when g.attempts > 0 then 'retryable' else 'scheduled' end)
    else 'available'
  end`;

const FROM = `mcsv_job.jobs l left join graphile_worker.jobs g on l.state = 'pending' and g.id = l.graphile_job_id`;

const SELECT_JOB = `
  select l.id, l.task, l.queue, l.args, l.trace, l.priority, l.max_attempts, l.job_key, l.errors, l.inserted_at,
         l.completed_at, l.cancelled_at, l.graphile_job_id,
         -- graphile locks a job a moment before the wrapper records the attempt.
         coalesce(g.locked_at, l.attempted_at) as attempted_at,
         case when g.id is not null then l.attempt_offset + g.attempts else l.attempts end as attempts,
         coalesce(g.run_at, l.run_at) as run_at,
         coalesce(l.discarded_at, case when l.state = 'pending' and (g.id is null or (g.locked_at is null and g.attempts >= g.max_attempts)) then g.updated_at end) as discarded_at,
         ${STATE} as state
  from ${FROM}`;

interface JobRow {
  id: string;
  task: string;
  queue: string | null;
  args: JsonObject;
  trace: Record<string, string> | null;
  priority: number;
  max_attempts: number;
  job_key: string | null;
  errors: { attempt: number; error: string; at: string }[];
  inserted_at: Date;
  attempted_at: Date | null;
  completed_at: Date | null;
  cancelled_at: Date | null;
  discarded_at: Date | null;
  graphile_job_id: string | null;
  attempts: number;
  run_at: Date;
  state: JobStateName;
}

function toRecord(row: JobRow): JobRecord {
  return {
    id: row.id,
    task: row.task,
    queue: row.queue,
    args: row.args,
    priority: row.priority,
    state: row.state,
    attempts: row.attempts,
    maxAttempts: row.max_attempts,
    errors: row.errors.map((e): JobAttemptError => ({ attempt: e.attempt, error: e.error, at: new Date(e.at) })),
    jobKey: row.job_key,
    runAt: row.run_at,
    insertedAt: row.inserted_at,
    attemptedAt: row.attempted_at,
    completedAt: row.completed_at,
    discardedAt: row.discarded_at,
    cancelledAt: row.cancelled_at,
  };
}

/** graphile's payload: the arguments plus the trace context under its reserved key. */
function graphilePayload(args: JsonObject, trace: Record<string, string> | null | undefined): JsonObject {
  return trace && Object.keys(trace).length > 0 ? { ...args, [TRACE_KEY]: trace } : args;
}

/** The W3C trace context in a graphile payload, if it carries one. */
export function traceOfPayload(payload: unknown): Record<string, string> | undefined {
  const carrier = (payload as Record<string, unknown> | null)?.[TRACE_KEY];
  if (carrier === null || typeof carrier !== "object" || Array.isArray(carrier)) return undefined;
  const entries = Object.entries(carrier);
  if (entries.length === 0 || !entries.every(([, v]) => typeof v === "string")) return undefined;
  return carrier as Record<string, string>;
}

/** The task arguments of a graphile payload (what the ledger shows). */
export function argsOfPayload(payload: unknown): JsonObject {
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) return {};
  const { [TRACE_KEY]: _trace, [CRON_KEY]: _cron, ...args } = payload as JsonObject;
  return args;
}

async function addGraphileJob(
  client: PoolClient,
  job: { task: string; args: JsonObject; trace?: Record<string, string> | null | undefined; queue?: string | null | undefined; runAt?: Date | null | undefined; maxAttempts: number; priority: number },
): Promise<string> {
  const { rows } = await client.query<{ id: string }>(
    `select id from graphile_worker.add_job($1, payload => $2::json, queue_name => $3, run_at => $4, max_attempts => $5, priority => $6)`,
    [job.task, JSON.stringify(graphilePayload(job.args, job.trace)), job.queue ?? null, job.runAt ?? null, job.maxAttempts, job.priority],
  );
  const id = rows[0]?.id;
  if (!id) throw new Error(`graphile_worker.add_job returned no job for task ${job.task}`);
  return id;
}

/** Inserts the ledger row and graphile's job in `client`'s transaction; undefined when the job key was used before. */
async function insertJob(client: PoolClient, spec: EnqueueSpec): Promise<string | undefined> {
  const inserted = await client.query<{ id: string; run_at: Date }>(
    `insert into mcsv_job.jobs (task, queue, args, trace, priority, max_attempts, job_key, run_at)
     values ($1, $2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, now()))
     on conflict (job_key) do nothing
     returning id, run_at`,
    [spec.task, spec.queue ?? null, JSON.stringify(spec.args), spec.trace && Object.keys(spec.trace).length > 0 ? JSON.stringify(spec.trace) : null, spec.priority ?? 0, spec.maxAttempts, spec.jobKey ?? null, spec.runAt ?? null],
  );
  const row = inserted.rows[0];
  if (!row) return undefined;
  const graphileId = await addGraphileJob(client, { ...spec, runAt: row.run_at, priority: spec.priority ?? 0 });
  await client.query(`update mcsv_job.jobs set graphile_job_id = $2 where id = $1`, [row.id, graphileId]);
  return row.id;
}

/**
 * Adds a job inside the caller's transaction, so that it exists exactly if the caller's other writes commit (crash
 * recovery's follow-up of a discarded job). With a job key that was used before, nothing is added and the id of
 * that job is returned (a concurrent insert of the same key waits for the other transaction to end).
 */
export async function enqueueInTransaction(client: PoolClient, spec: EnqueueSpec): Promise<{ id: string; duplicate: boolean }> {
  const id = await insertJob(client, spec);
  if (id !== undefined) return { id, duplicate: false };
  const { rows } = await client.query<{ id: string }>(`select id from mcsv_job.jobs where job_key = $1`, [spec.jobKey]);
  if (!rows[0]) throw new Error(`job key ${spec.jobKey} conflicted, but its job is gone`);
  return { id: rows[0].id, duplicate: true };
}

export interface ListFilter {
  task?: string | undefined;
  queue?: string | undefined;
  states?: JobStateName[] | undefined;
  /** Only jobs with a smaller id (keyset pagination, newest first). */
  beforeId?: string | undefined;
  limit: number;
}

export interface QueueCount {
  queue: string | null;
  task: string;
  state: JobStateName;
  count: number;
}

/** What the task wrapper learns when an attempt starts. */
export interface ClaimedJob {
  id: string;
  /** 'pending', or the terminal state the job reached meanwhile (then the attempt must not run). */
  state: "pending" | "completed" | "discarded" | "cancelled";
  /** Number of this attempt across every graphile job of the ledger row. */
  attempt: number;
  maxAttempts: number;
  trace: Record<string, string> | null;
}

/** The graphile job an attempt runs (the fields the ledger needs). */
export interface GraphileJobInfo {
  id: string;
  task: string;
  queue: string | null;
  payload: unknown;
  priority: number;
  attempts: number;
  maxAttempts: number;
  runAt: Date;
  createdAt: Date;
}

/** One job as the ledger shows it, read through `db` (the pool, or a transaction's client). */
async function readJob(db: Pool | PoolClient, id: string): Promise<JobRecord> {
  const { rows } = await db.query<JobRow>(`${SELECT_JOB} where l.id = $1`, [id]);
  if (!rows[0]) throw new JobNotFoundError(id);
  return toRecord(rows[0]);
}

export class JobLedger {
  constructor(private readonly pool: Pool) {}

  /**
   * Adds a job, or with a job key that was used before, returns that job. A new job is read back inside its own
   * transaction, so the answer is the job as enqueued (available, no attempt yet) even if a worker takes it at once.
   */
  async enqueue(spec: EnqueueSpec): Promise<EnqueueResult> {
    const added = await transaction(this.pool, async (client) => {
      const id = await insertJob(client, spec);
      return id === undefined ? undefined : readJob(client, id);
    });
    if (added !== undefined) return { job: added, duplicate: false };
    const existing = await this.pool.query<JobRow>(`${SELECT_JOB} where l.job_key = $1`, [spec.jobKey]);
    if (!existing.rows[0]) throw new Error(`job key ${spec.jobKey} conflicted, but its job is gone`);
    return { job: toRecord(existing.rows[0]), duplicate: true };
  }

  async get(id: string): Promise<JobRecord> {
    return readJob(this.pool, id);
  }

  /** Jobs newest first; one more than `limit` tells the caller that another page follows. */
  async list(filter: ListFilter): Promise<JobRecord[]> {
    const { rows } = await this.pool.query<JobRow>(
      `select * from (${SELECT_JOB}
         where ($1::text is null or l.task = $1) and ($2::text is null or l.queue = $2) and ($3::bigint is null or l.id < $3)) j
       where ($4::text[] is null or j.state = any($4))
       order by j.id desc
       limit $5`,
      [filter.task ?? null, filter.queue ?? null, filter.beforeId ?? null, filter.states?.length ? filter.states : null, filter.limit],
    );
    return rows.map(toRecord);
  }

  /** Jobs per queue, task and state. */
  async counts(): Promise<QueueCount[]> {
    const { rows } = await this.pool.query<{ queue: string | null; task: string; state: JobStateName; count: string }>(
      `select l.queue, l.task, ${STATE} as state, count(*) as count from ${FROM} group by 1, 2, 3 order by 1 nulls first, 2, 3`,
    );
    return rows.map((r) => ({ queue: r.queue, task: r.task, state: r.state, count: Number(r.count) }));
  }

  /**
   * Cancels a job that has not finished. A pending job leaves graphile's queue; an executing one finishes its
   * current attempt, after which the task wrapper sees the cancellation and lets it go without a retry.
   */
  async cancel(id: string): Promise<JobRecord> {
    await transaction(this.pool, async (client) => {
      const job = await this.lock(client, id);
      if (TERMINAL_STATES.has(job.record.state)) throw new JobStateError(job.record, `job ${id} is already ${job.record.state}`);
      // Deletes only an unlocked job; one that a worker has just locked goes on as executing.
      if (job.graphileJobId) await client.query(`select id from graphile_worker.complete_jobs(array[$1]::bigint[])`, [job.graphileJobId]);
      await client.query(`update mcsv_job.jobs set state = 'cancelled', cancelled_at = now() where id = $1`, [id]);
    });
    return this.get(id);
  }

  /**
   * Runs a job again now: a retryable job at once, a discarded or cancelled one as a new graphile job with the
   * same payload and at least one more attempt (as Oban's retry_job does).
   */
  async retry(id: string): Promise<JobRecord> {
    await transaction(this.pool, async (client) => {
      const { record, graphileJobId, trace } = await this.lock(client, id);
      if (record.state === "retryable") {
        const moved = await client.query(`select id from graphile_worker.reschedule_jobs(array[$1]::bigint[], run_at => now())`, [graphileJobId]);
        if (moved.rowCount === 0) throw new JobStateError(record, `job ${id} started meanwhile`);
        // Wake an idle worker now instead of at its next poll.
        await client.query(`select pg_notify('jobs:insert', '{"count":1}')`);
        return;
      }
      if (record.state !== "discarded" && record.state !== "cancelled") {
        throw new JobStateError(record, `job ${id} is ${record.state}; only discarded, cancelled or retryable jobs can be retried`);
      }
      if (graphileJobId) {
        const old = await client.query<{ locked_at: Date | null }>(`select locked_at from graphile_worker.jobs where id = $1`, [graphileJobId]);
        if (old.rows[0]?.locked_at) throw new JobStateError(record, `job ${id} is still finishing its cancelled attempt`);
        // A job that ran out of attempts stays in graphile's table; the new one replaces it.
        if (old.rows[0]) await client.query(`select id from graphile_worker.complete_jobs(array[$1]::bigint[])`, [graphileJobId]);
      }
      const maxAttempts = Math.max(record.maxAttempts, record.attempts + 1);
      const newGraphileId = await addGraphileJob(client, {
        task: record.task,
        args: record.args,
        trace,
        queue: record.queue,
        maxAttempts: maxAttempts - record.attempts,
        priority: record.priority,
      });
      await client.query(
        `update mcsv_job.jobs
         set state = 'pending', graphile_job_id = $2, attempt_offset = $3, attempts = $3, max_attempts = $4, run_at = now(),
             completed_at = null, discarded_at = null, cancelled_at = null
         where id = $1`,
        [id, newGraphileId, record.attempts, maxAttempts],
      );
    });
    return this.get(id);
  }

  /** Locks the ledger row for the rest of the transaction and reads the job. */
  private async lock(client: PoolClient, id: string): Promise<{ record: JobRecord; graphileJobId: string | null; trace: Record<string, string> | null }> {
    const { rows } = await client.query<JobRow>(`${SELECT_JOB} where l.id = $1 for update of l`, [id]);
    const row = rows[0];
    if (!row) throw new JobNotFoundError(id);
    return { record: toRecord(row), graphileJobId: row.graphile_job_id, trace: row.trace };
  }

  // --- The task wrapper's side: one attempt of a graphile job. ---

  /**
   * Records that an attempt of graphile job `job` starts, and returns the ledger row. A job that graphile got
   * without the ledger (a crontab entry) is adopted: it gets its ledger row now.
   */
  async startAttempt(job: GraphileJobInfo): Promise<ClaimedJob> {
    const updated = await this.pool.query<{ id: string; state: ClaimedJob["state"]; attempts: number; max_attempts: number; trace: Record<string, string> | null }>(
      `update mcsv_job.jobs
       set attempts = case when state = 'pending' then attempt_offset + $2 else attempts end,
           attempted_at = case when state = 'pending' then now() else attempted_at end
       where graphile_job_id = $1
       returning id, state, attempts, max_attempts, trace`,
      [job.id, job.attempts],
    );
    const row =
      updated.rows[0] ??
      (
        await this.pool.query<{ id: string; state: ClaimedJob["state"]; attempts: number; max_attempts: number; trace: null }>(
          `insert into mcsv_job.jobs (task, queue, args, priority, max_attempts, graphile_job_id, attempts, attempted_at, run_at, inserted_at)
           values ($1, $2, $3, $4, $5, $6, $7, now(), $8, $9)
           on conflict (graphile_job_id) where graphile_job_id is not null do update set attempts = excluded.attempts, attempted_at = now()
           returning id, state, attempts, max_attempts, null as trace`,
          [job.task, job.queue, JSON.stringify(argsOfPayload(job.payload)), job.priority, job.maxAttempts, job.id, job.attempts, job.runAt, job.createdAt],
        )
      ).rows[0];
    if (!row) throw new Error(`no ledger row for graphile job ${job.id}`);
    return { id: row.id, state: row.state, attempt: row.attempts, maxAttempts: row.max_attempts, trace: row.trace };
  }

  /** The attempt succeeded: the job is completed, unless it was cancelled meanwhile. */
  async completeAttempt(id: string, attempt: number): Promise<void> {
    await this.pool.query(`update mcsv_job.jobs set state = 'completed', completed_at = now(), attempts = $2 where id = $1 and state = 'pending'`, [id, attempt]);
  }

  /**
   * The attempt failed: records the error and, when `final`, discards the job. Returns the state after, so that
   * the wrapper knows whether graphile should retry ('pending') or forget the job.
   */
  async failAttempt(id: string, attempt: number, error: string, final: boolean): Promise<ClaimedJob["state"]> {
    const { rows } = await this.pool.query<{ state: ClaimedJob["state"] }>(
      `update mcsv_job.jobs
       set errors = errors || jsonb_build_array(jsonb_build_object('attempt', $2::int, 'error', $3::text, 'at', now())),
           attempts = $2,
           state = case when state = 'pending' and $4 then 'discarded' else state end,
           discarded_at = case when state = 'pending' and $4 then now() else discarded_at end
       where id = $1
       returning state`,
      [id, attempt, error.slice(0, MAX_ERROR_LENGTH), final],
    );
    return rows[0]?.state ?? "discarded";
  }

  /**
   * The attempt was cut short by a shutdown: it records the error but does not count, so that a deploy never
   * uses up a job's last attempt (graphile's returnJobs does the same for jobs it hands back unstarted).
   */
  async interruptAttempt(id: string, graphileJobId: string, attempt: number, error: string): Promise<void> {
    await transaction(this.pool, async (client) => {
      await client.query(`update graphile_worker._private_jobs set attempts = greatest(0, attempts - 1) where id = $1`, [graphileJobId]);
      await client.query(
        `update mcsv_job.jobs
         set errors = errors || jsonb_build_array(jsonb_build_object('attempt', $2::int, 'error', $3::text, 'at', now())),
             attempts = greatest(0, $2 - 1)
         where id = $1`,
        [id, attempt, error.slice(0, MAX_ERROR_LENGTH)],
      );
    });
  }

  /** Deletes finished jobs older than `maxAgeSeconds`, in batches; returns how many. */
  async prune(maxAgeSeconds: number, batchSize = 5_000): Promise<number> {
    let total = 0;
    for (;;) {
      const result = await this.pool.query(
        `delete from mcsv_job.jobs where id in (
           select id from mcsv_job.jobs
           where state <> 'pending' and coalesce(completed_at, discarded_at, cancelled_at) < now() - make_interval(secs => $1)
           limit $2)`,
        [maxAgeSeconds, batchSize],
      );
      total += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < batchSize) return total;
    }
  }
}
