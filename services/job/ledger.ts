/**
 * The job ledger (mcsv_job.jobs): the only authority on a job's state, from enqueue to its end and after.
 *
 * A row is 'queued' until an attempt claims it ('executing', under a lease), and ends 'completed', 'discarded' or
 * 'cancelled'. Attempts, errors, back-off, leases, cancellation and retries are written here alone. graphile-worker
 * only dispatches (dispatcher.ts): every write that makes a job due again dispatches it in the same statement, and
 * each attempt, its outcome and its lease are fenced by the dispatch number, so a stale dispatch or a late outcome
 * of an attempt that lost its lease changes nothing.
 */
import type { JsonObject } from "@bufbuild/protobuf";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";
import { MAX_ERROR_TEXT_LENGTH } from "../shared/errors.js";
import { dispatchExpression, type Ticket } from "./dispatcher.js";
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


/** Attempts abandoned by an expired lease that are given back per job; later ones count. */
export const MAX_GIVEN_BACK = 3;

/** The states stored: 'queued' stands for available, scheduled and retryable. */
type StoredState = "queued" | "executing" | "completed" | "discarded" | "cancelled";

/** The state the API reports, from the stored one: a queued job is available, scheduled or retryable. */
const stateOf = (t: string) => `
  case when ${t}.state <> 'queued' then ${t}.state
       when ${t}.run_at <= now() then 'available'
       when ${t}.attempts > 0 then 'retryable'
       else 'scheduled' end`;

const FIELDS = (t: string) => `
  ${t}.id, ${t}.task, ${t}.queue, ${t}.args, ${t}.priority, ${t}.max_attempts, ${t}.job_key, ${t}.errors, ${t}.inserted_at,
  ${t}.attempted_at, ${t}.completed_at, ${t}.discarded_at, ${t}.cancelled_at, ${t}.attempts, ${t}.run_at, ${stateOf(t)} as state`;

/** Back-off before a failed attempt's retry: e^attempts seconds (3 s, 7 s, 20 s, …), at most e^10 (6 hours). */
const BACKOFF = `make_interval(secs => exp(least(attempts, 10)))`;

/**
 * One statement that applies `update` (an UPDATE of mcsv_job.jobs, without RETURNING) and dispatches the row again
 * if the update left it queued; it answers the row's state (none when the update matched nothing).
 */
const redispatchingIfQueued = (update: string) => `
  with changed as (${update} returning *)
  select c.state, case when c.state = 'queued' then (${dispatchExpression("c")}).id end as dispatched from changed c`;

const errorEntry = (attempt: string, error: string) =>
  `jsonb_build_array(jsonb_build_object('attempt', ${attempt}::int, 'error', ${error}::text, 'at', now()))`;

interface JobRow {
  id: string;
  task: string;
  queue: string | null;
  args: JsonObject;
  priority: number;
  max_attempts: number;
  job_key: string | null;
  errors: { attempt: number; error: string; at: string }[];
  inserted_at: Date;
  attempted_at: Date | null;
  completed_at: Date | null;
  cancelled_at: Date | null;
  discarded_at: Date | null;
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

/** Inserts and dispatches a job in one statement; no row when its job key was used before. */
const INSERT = `
  with inserted as (
    insert into mcsv_job.jobs (task, queue, args, trace, priority, max_attempts, job_key, run_at)
    values ($1, $2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, now()))
    on conflict (job_key) do nothing
    returning *
  )
  select ${FIELDS("i")}, (${dispatchExpression("i")}).id as dispatched from inserted i`;

function insertValues(spec: EnqueueSpec): unknown[] {
  const trace = spec.trace && Object.keys(spec.trace).length > 0 ? JSON.stringify(spec.trace) : null;
  return [spec.task, spec.queue ?? null, JSON.stringify(spec.args), trace, spec.priority ?? 0, spec.maxAttempts, spec.jobKey ?? null, spec.runAt ?? null];
}

async function insertJob(db: Pool | PoolClient, spec: EnqueueSpec): Promise<EnqueueResult> {
  const inserted = await db.query<JobRow>(INSERT, insertValues(spec));
  if (inserted.rows[0]) return { job: toRecord(inserted.rows[0]), duplicate: false };
  // The key was used before (a concurrent insert of the same key waited for the other transaction to end).
  const existing = await db.query<JobRow>(`select ${FIELDS("l")} from mcsv_job.jobs l where l.job_key = $1`, [spec.jobKey]);
  if (!existing.rows[0]) throw new Error(`job key ${spec.jobKey} conflicted, but its job is gone`);
  return { job: toRecord(existing.rows[0]), duplicate: true };
}

/**
 * Adds a job inside the caller's transaction, so that it exists exactly if the caller's other writes commit (the
 * follow-up of a job discarded when its lease expired). With a job key that was used before, nothing is added and
 * that job is returned.
 */
export async function enqueueInTransaction(client: PoolClient, spec: EnqueueSpec): Promise<{ id: string; duplicate: boolean }> {
  const { job, duplicate } = await insertJob(client, spec);
  return { id: job.id, duplicate };
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

/** Who takes an attempt: the graphile job that dispatched it, and the worker pool that runs it (the lease's owner). */
export interface Dispatch {
  graphileJobId: string;
  owner: string;
  leaseSeconds: number;
}

/** An attempt that holds its job's lease. */
export interface Attempt {
  id: string;
  dispatch: number;
  task: string;
  args: JsonObject;
  trace: Record<string, string> | null;
  /** This attempt's number, from 1. */
  attempt: number;
  maxAttempts: number;
}

/** Why a dispatch runs no attempt: the job ended, or the ledger dispatched it again (or runs it) meanwhile. */
export type NotClaimed = "completed" | "discarded" | "cancelled" | "stale";

/** What an attempt's outcome did to its job; `superseded` when it no longer held the lease (the write changed nothing). */
export type AttemptOutcome = "completed" | "retry" | "discarded" | "cancelled" | "superseded";

/** A job whose lease expired, as recovery found it (locked for its transaction). */
export interface ExpiredLease {
  id: string;
  task: string;
  args: JsonObject;
  trace: Record<string, string> | null;
  state: StoredState;
  owner: string;
  attempts: number;
  maxAttempts: number;
  givenBack: number;
  expiredLeases: number;
}

const ATTEMPT_FIELDS = `id, dispatch, task, args, trace, attempts, max_attempts`;

interface AttemptRow {
  id: string;
  dispatch: number;
  task: string;
  args: JsonObject;
  trace: Record<string, string> | null;
  attempts: number;
  max_attempts: number;
}

const toAttempt = (row: AttemptRow): Attempt => ({
  id: row.id,
  dispatch: row.dispatch,
  task: row.task,
  args: row.args,
  trace: row.trace,
  attempt: row.attempts,
  maxAttempts: row.max_attempts,
});

export class JobLedger {
  constructor(private readonly pool: Pool) {}

  /** Adds and dispatches a job in one statement, or with a job key that was used before, returns that job. */
  async enqueue(spec: EnqueueSpec): Promise<EnqueueResult> {
    return insertJob(this.pool, spec);
  }

  /** Adds and dispatches every job in one transaction (a repeated job key returns that job, as enqueue does). */
  async enqueueMany(specs: EnqueueSpec[]): Promise<EnqueueResult[]> {
    return transaction(this.pool, async (client) => {
      const results: EnqueueResult[] = [];
      for (const spec of specs) results.push(await insertJob(client, spec));
      return results;
    });
  }

  async get(id: string): Promise<JobRecord> {
    const { rows } = await this.pool.query<JobRow>(`select ${FIELDS("l")} from mcsv_job.jobs l where l.id = $1`, [id]);
    if (!rows[0]) throw new JobNotFoundError(id);
    return toRecord(rows[0]);
  }

  /** Jobs newest first; one more than `limit` tells the caller that another page follows. */
  async list(filter: ListFilter): Promise<JobRecord[]> {
    const { rows } = await this.pool.query<JobRow>(
      `select * from (select ${FIELDS("l")} from mcsv_job.jobs l
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
      `select l.queue, l.task, ${stateOf("l")} as state, count(*) as count from mcsv_job.jobs l group by 1, 2, 3 order by 1 nulls first, 2, 3`,
    );
    return rows.map((r) => ({ queue: r.queue, task: r.task, state: r.state, count: Number(r.count) }));
  }

  /**
   * Cancels a job that has not finished. A queued job's dispatch finds it cancelled and does nothing; an executing
   * one finishes its current attempt, whose outcome then leaves the job cancelled.
   */
  async cancel(id: string): Promise<JobRecord> {
    const { rows } = await this.pool.query<JobRow>(
      `update mcsv_job.jobs l set state = 'cancelled', cancelled_at = now() where id = $1 and state in ('queued', 'executing')
       returning ${FIELDS("l")}`,
      [id],
    );
    if (rows[0]) return toRecord(rows[0]);
    const job = await this.get(id);
    throw new JobStateError(job, `job ${id} is already ${job.state}`);
  }

  /**
   * Runs a job again now: a retryable job at once, a discarded or cancelled one with at least one more attempt (as
   * Oban's retry_job does). Either way it is dispatched anew; the dispatch it had, if any, becomes stale.
   */
  async retry(id: string): Promise<JobRecord> {
    return transaction(this.pool, async (client) => {
      const { rows } = await client.query<JobRow & { leased: boolean }>(
        `select ${FIELDS("l")}, l.lease_expires_at is not null as leased from mcsv_job.jobs l where l.id = $1 for update`,
        [id],
      );
      const row = rows[0];
      if (!row) throw new JobNotFoundError(id);
      const job = toRecord(row);
      if (job.state !== "retryable" && job.state !== "discarded" && job.state !== "cancelled") {
        throw new JobStateError(job, `job ${id} is ${job.state}; only discarded, cancelled or retryable jobs can be retried`);
      }
      if (row.leased) throw new JobStateError(job, `job ${id} is still finishing its cancelled attempt`);
      const moved = await client.query<JobRow>(
        `with moved as (
           update mcsv_job.jobs
           set state = 'queued', dispatch = dispatch + 1, run_at = now(), max_attempts = greatest(max_attempts, attempts + 1),
               completed_at = null, discarded_at = null, cancelled_at = null
           where id = $1
           returning *
         )
         select ${FIELDS("m")}, (${dispatchExpression("m")}).id as dispatched from moved m`,
        [id],
      );
      return toRecord(moved.rows[0]!);
    });
  }

  // --- The task wrapper's side: one attempt, under a lease. ---

  /**
   * Claims the attempt that `ticket` dispatches: the job must be queued on this very dispatch. Returns the attempt,
   * or why none runs.
   */
  async claim(ticket: Ticket, by: Dispatch): Promise<Attempt | NotClaimed> {
    const { rows } = await this.pool.query<AttemptRow>(
      `update mcsv_job.jobs
       set state = 'executing', attempts = attempts + 1, attempted_at = now(),
           lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), graphile_job_id = $5
       where id = $1 and dispatch = $2 and state = 'queued'
       returning ${ATTEMPT_FIELDS}`,
      [ticket.job, ticket.dispatch, by.owner, by.leaseSeconds, by.graphileJobId],
    );
    if (rows[0]) return toAttempt(rows[0]);
    const current = await this.pool.query<{ state: string; dispatch: number }>(`select state, dispatch from mcsv_job.jobs where id = $1`, [ticket.job]);
    const row = current.rows[0];
    if (row && row.dispatch === ticket.dispatch && TERMINAL_STATES.has(row.state as JobStateName)) return row.state as NotClaimed;
    return "stale";
  }

  /**
   * The ticket of a job that graphile got without one: a row from before the ledger owned state (found by its
   * graphile job), or else a crontab entry, which gets its ledger row now.
   */
  async ticketOfUndispatched(
    graphileJob: { id: string; task: string; queue: string | null; priority: number; maxAttempts: number; runAt: Date; createdAt: Date },
    args: JsonObject,
  ): Promise<Ticket | undefined> {
    const { rows } = await this.pool.query<{ id: string; dispatch: number }>(
      `with legacy as (select id, dispatch from mcsv_job.jobs where graphile_job_id = $6),
       adopted as (
         insert into mcsv_job.jobs (task, queue, args, priority, max_attempts, graphile_job_id, run_at, inserted_at)
         select $1, $2, $3, $4, $5, $6, $7, $8 where not exists (select 1 from legacy)
         on conflict (graphile_job_id) where graphile_job_id is not null do nothing
         returning id, dispatch
       )
       select * from legacy union all select * from adopted`,
      [graphileJob.task, graphileJob.queue, JSON.stringify(args), graphileJob.priority, graphileJob.maxAttempts, graphileJob.id, graphileJob.runAt, graphileJob.createdAt],
    );
    return rows[0] ? { job: rows[0].id, dispatch: rows[0].dispatch } : undefined;
  }

  /**
   * Renews the leases of the attempts `held` that worker pools `owners` still own (one statement per heartbeat for
   * all of a process's attempts): a lease that recovery took away, or that a test handed to another owner, stays so.
   * Returns the `id:dispatch` keys of the leases renewed.
   */
  async renewLeases(held: { id: string; dispatch: number }[], owners: string[], leaseSeconds: number): Promise<Set<string>> {
    if (held.length === 0) return new Set();
    const { rows } = await this.pool.query<{ key: string }>(
      `update mcsv_job.jobs set lease_expires_at = now() + make_interval(secs => $4)
       where (id, dispatch) in (select * from unnest($1::bigint[], $2::int[])) and lease_owner = any($3::text[])
       returning id || ':' || dispatch as key`,
      [held.map((h) => h.id), held.map((h) => h.dispatch), owners, leaseSeconds],
    );
    return new Set(rows.map((r) => r.key));
  }

  /** The attempt succeeded: the job is completed, unless it was cancelled meanwhile. */
  async succeed(attempt: Attempt): Promise<AttemptOutcome> {
    const { rows } = await this.pool.query<{ state: StoredState }>(
      `update mcsv_job.jobs
       set state = case when state = 'executing' then 'completed' else state end,
           completed_at = case when state = 'executing' then now() else completed_at end,
           lease_owner = null, lease_expires_at = null
       where id = $1 and dispatch = $2 and lease_expires_at is not null
       returning state`,
      [attempt.id, attempt.dispatch],
    );
    return rows[0] ? (rows[0].state === "completed" ? "completed" : "cancelled") : "superseded";
  }

  /**
   * The attempt failed: records the error and, when `final` or out of attempts, discards the job; otherwise
   * dispatches it again after the back-off.
   */
  async fail(attempt: Attempt, error: string, final: boolean): Promise<AttemptOutcome> {
    const discard = final || attempt.attempt >= attempt.maxAttempts;
    const { rows } = await this.pool.query<{ state: StoredState }>(
      redispatchingIfQueued(`
        update mcsv_job.jobs
        set errors = errors || ${errorEntry("attempts", "$3")},
            lease_owner = null, lease_expires_at = null,
            state = case when state <> 'executing' then state when $4 then 'discarded' else 'queued' end,
            discarded_at = case when state = 'executing' and $4 then now() else discarded_at end,
            run_at = case when state = 'executing' and not $4 then now() + ${BACKOFF} else run_at end,
            dispatch = case when state = 'executing' and not $4 then dispatch + 1 else dispatch end
        where id = $1 and dispatch = $2 and lease_expires_at is not null`),
      [attempt.id, attempt.dispatch, error.slice(0, MAX_ERROR_TEXT_LENGTH), discard],
    );
    const state = rows[0]?.state;
    return state === undefined ? "superseded" : state === "queued" ? "retry" : state === "discarded" ? "discarded" : "cancelled";
  }

  /**
   * The attempt was cut short by a shutdown: it records the error but does not count, so that a deploy never uses
   * up a job's last attempt, and the job is dispatched again at once.
   */
  interrupt(attempt: Attempt, error: string): Promise<AttemptOutcome> {
    return this.giveBack(attempt, error.slice(0, MAX_ERROR_TEXT_LENGTH), 0);
  }

  /**
   * The attempt found its callee busy: it does not count and records no error (a busy spell would bury the real
   * ones), and the job is dispatched again after `delaySeconds`.
   */
  defer(attempt: Attempt, delaySeconds: number): Promise<AttemptOutcome> {
    return this.giveBack(attempt, null, delaySeconds);
  }

  /** Gives an attempt back uncounted, recording `error` unless null; the job is dispatched again after the delay. */
  private async giveBack(attempt: Attempt, error: string | null, delaySeconds: number): Promise<AttemptOutcome> {
    const { rows } = await this.pool.query<{ state: StoredState }>(
      redispatchingIfQueued(`
        update mcsv_job.jobs
        set errors = case when $3::text is null then errors else errors || ${errorEntry("attempts", "$3")} end,
            attempts = greatest(0, attempts - 1), lease_owner = null, lease_expires_at = null,
            state = case when state = 'executing' then 'queued' else state end,
            run_at = case when state = 'executing' then now() + make_interval(secs => $4) else run_at end,
            dispatch = case when state = 'executing' then dispatch + 1 else dispatch end
        where id = $1 and dispatch = $2 and lease_expires_at is not null`),
      [attempt.id, attempt.dispatch, error, delaySeconds],
    );
    const state = rows[0]?.state;
    return state === undefined ? "superseded" : state === "queued" ? "retry" : "cancelled";
  }

  // --- Recovery's side: attempts whose lease expired. ---

  /** Up to `limit` jobs whose lease has expired, locked for `client`'s transaction (skipping those a peer holds). */
  async expiredLeases(client: PoolClient, limit: number): Promise<ExpiredLease[]> {
    const { rows } = await client.query<ExpiredLease>(
      `select id, task, args, trace, state, lease_owner as owner, attempts, max_attempts as "maxAttempts",
              abandoned_attempts as "givenBack", expired_leases as "expiredLeases"
       from mcsv_job.jobs where lease_expires_at < now()
       order by lease_expires_at limit $1 for update skip locked`,
      [limit],
    );
    return rows;
  }

  /**
   * Abandons the attempt of `job`, whose lease expired: the error is recorded and the attempt given back (at most
   * MAX_GIVEN_BACK times per job, as the tasks only orchestrate calls and a worker's death is rarely the job's
   * doing). A job with no attempt left is discarded; any other is dispatched again at once. A job cancelled while
   * the attempt ran just loses the lease.
   */
  async abandon(client: PoolClient, job: ExpiredLease, error: string): Promise<"givenBack" | "counted" | "discarded" | "released"> {
    if (job.state !== "executing") {
      await client.query(`update mcsv_job.jobs set lease_owner = null, lease_expires_at = null where id = $1`, [job.id]);
      return "released";
    }
    const giveBack = job.givenBack < MAX_GIVEN_BACK && job.attempts > 0;
    const final = !giveBack && job.attempts >= job.maxAttempts;
    await client.query(
      redispatchingIfQueued(`
        update mcsv_job.jobs
        set errors = errors || ${errorEntry("attempts", "$2")},
            attempts = attempts - case when $3 then 1 else 0 end,
            abandoned_attempts = abandoned_attempts + case when $3 then 1 else 0 end,
            expired_leases = expired_leases + 1,
            lease_owner = null, lease_expires_at = null,
            state = case when $4 then 'discarded' else 'queued' end,
            discarded_at = case when $4 then now() else discarded_at end,
            run_at = case when $4 then run_at else now() end,
            dispatch = dispatch + case when $4 then 0 else 1 end
        where id = $1`),
      [job.id, error.slice(0, MAX_ERROR_TEXT_LENGTH), giveBack, final],
    );
    return giveBack ? "givenBack" : final ? "discarded" : "counted";
  }

  /** Deletes finished jobs older than `maxAgeSeconds`, in batches; returns how many. */
  async prune(maxAgeSeconds: number, batchSize = 5_000): Promise<number> {
    let total = 0;
    for (;;) {
      const result = await this.pool.query(
        `delete from mcsv_job.jobs where id in (
           select id from mcsv_job.jobs
           where state in ('completed', 'discarded', 'cancelled') and coalesce(completed_at, discarded_at, cancelled_at) < now() - make_interval(secs => $1)
           limit $2)`,
        [maxAgeSeconds, batchSize],
      );
      total += result.rowCount ?? 0;
      if ((result.rowCount ?? 0) < batchSize) return total;
    }
  }
}
