/**
 * Crash recovery. graphile-worker 0.17 locks a job with the id of the worker pool that runs it and, when that
 * process dies (SIGKILL, out of memory, a lost node), lets go of the job only once the lock is 4 hours old.
 *
 * So every pool this process runs is registered in mcsv_job.workers and beats every JOB_WORKER_HEARTBEAT_MS. On
 * start-up and at every beat, a replica declares the pools that have been silent for JOB_WORKER_DEAD_AFTER_MS dead
 * and, in one transaction, records the abandoned attempts in the ledger, releases their jobs
 * (graphile_worker.force_unlock_workers, what WorkerUtils.forceUnlockWorkers calls) and deletes their rows; N
 * replicas on one Postgres recover each other's jobs within seconds, one replica at a time (an advisory lock).
 *
 * An abandoned attempt is given back, as one cut short by a shutdown is (execution.ts): the tasks only orchestrate
 * calls, so a worker's death is rarely the job's doing. At most MAX_GIVEN_BACK times per job, so that a job that
 * does kill its worker every time still runs out of attempts; one that then has none left is discarded.
 *
 * graphile 0.17 also neither awaits nor retries (on a lost connection) the write that completes or fails a job
 * after its attempt; a Postgres outage at that moment leaves the job locked by a live pool. Such a stranded job is
 * released by the pool's own process once its attempt has been over for JOB_WORKER_DEAD_AFTER_MS.
 *
 * No task code sees a job discarded here, so a task whose discard must be answered (convert_image: the gateway must
 * hear FAILED) declares a follow-up job (TaskDefinition.onDiscarded). It is added in the transaction that records
 * the discard, with a job key from the discarded job: a crash cannot lose it, and a second recovery cannot repeat it.
 *
 * A pool that is only slow to beat (a long pause) may find a job released and run it a second time; the tasks are
 * idempotent (job keys, deterministic object keys, Resend idempotency keys), so a repeat does no harm. Nobody is
 * judged right after Postgres itself (re)started, or right after this process lost its own connection: no
 * heartbeat could be written meanwhile.
 */
import { hostname } from "node:os";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { checkEnqueueInput, enqueueJobInTransaction, taskOfInput, type EnqueueInput } from "./enqueue.js";
import { argsOfPayload, traceOfPayload } from "./ledger.js";
import { deadWorkerPoolsTotal, discardFollowUpsTotal, jobAttemptsTotal } from "./metrics.js";
import type { AnyTaskDefinition, DiscardedJob } from "./tasks/context.js";

/** Abandoned attempts given back per job; later ones count. */
export const MAX_GIVEN_BACK = 3;

/** Longest error message kept per attempt (as the ledger's). */
const MAX_ERROR_LENGTH = 2_000;

/** One recovery at a time across replicas (an arbitrary constant key of pg_try_advisory_xact_lock). */
const RECOVERY_LOCK = 0x6d637376; // "mcsv"

export interface CrashRecoveryOptions {
  heartbeatMs: number;
  deadAfterMs: number;
  /** The task definitions by identifier, for their onDiscarded follow-ups. */
  tasks?: Readonly<Record<string, Pick<AnyTaskDefinition, "decode" | "onDiscarded">>> | undefined;
}

/** What one recovery round did. */
export interface RecoveryReport {
  /** Worker pools declared dead (registered pools that stopped beating, and lock holders that never registered). */
  deadWorkers: string[];
  /** Jobs released, by what happened to their abandoned attempt. */
  givenBack: string[];
  counted: string[];
  discarded: string[];
  /** The follow-up jobs added for discarded jobs (TaskDefinition.onDiscarded). */
  followUps: FollowUp[];
}

/** A follow-up job of a discarded job; `duplicate` when its job key had been used (an earlier round added it). */
export interface FollowUp {
  discardedJobId: string;
  task: string;
  jobId: string;
  duplicate: boolean;
}

const NOTHING: RecoveryReport = { deadWorkers: [], givenBack: [], counted: [], discarded: [], followUps: [] };

type Released = Omit<RecoveryReport, "deadWorkers">;

/** A job discarded in this round (for the log, after the commit). */
interface DiscardNote {
  jobId: string;
  task: string;
  graphileJobId: string;
  cause: DiscardedJob["cause"];
  followUp?: FollowUp;
  followUpError?: string;
}

interface LockedJob {
  graphile_id: string;
  task: string;
  attempts: number;
  max_attempts: number;
  locked_by: string;
  payload: unknown;
  trace: Record<string, string> | null;
  ledger_id: string | null;
  attempt_offset: number | null;
  abandoned_attempts: number | null;
  state: string | null;
}

export class CrashRecovery {
  private readonly pools = new Set<string>();
  /**
   * Jobs whose attempt ended here (graphile job id → when, and graphile's attempt count of that attempt, which tells
   * its lock from the lock of a later attempt): graphile's write of the outcome follows, unawaited.
   */
  private readonly ended = new Map<string, { at: number; attempts: number }>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  private connectionLost = false;
  /** No recovery before this time (epoch ms): at once on start-up, a while after this process lost Postgres. */
  private recoverAfter = 0;

  constructor(
    private readonly pool: Pool,
    private readonly logger: Logger,
    private readonly options: CrashRecoveryOptions,
  ) {}

  /** Registers a worker pool (graphile's `pool:create`); its row is written at once and on every beat. */
  register(id: string): void {
    this.pools.add(id);
    void this.beat().catch(() => undefined);
  }

  /** A pool that stopped cleanly (graphile's `pool:release`): its jobs are already completed, failed or returned. */
  async unregister(id: string): Promise<void> {
    this.pools.delete(id);
    await this.pool.query(`delete from mcsv_job.workers where id = $1`, [id]);
  }

  /** graphile's `job:complete`: the attempt ended (its outcome is being written; see releaseStranded). */
  jobEnded(job: { id: string; attempts: number }): void {
    this.ended.set(job.id, { at: Date.now(), attempts: job.attempts });
  }

  /** Beats and recovers now (start-up), then every heartbeat interval. */
  async start(): Promise<void> {
    this.round = this.tick();
    await this.round;
    this.schedule();
  }

  /** Stops beating and removes the rows of the pools still registered (after the runner has stopped). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.round;
    const ids = [...this.pools];
    this.pools.clear();
    if (ids.length > 0) {
      await this.pool.query(`delete from mcsv_job.workers where id = any($1::text[])`, [ids]).catch((error: unknown) => {
        // The rows age; a peer (or the next start) deletes them without touching any job (none is locked by them).
        this.logger.warn("worker registrations not removed", { error: describeError(error) });
      });
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.round = this.tick().finally(() => {
        this.round = undefined;
        this.schedule();
      });
    }, this.options.heartbeatMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    try {
      await this.beat();
    } catch (error) {
      if (!this.connectionLost) this.logger.warn("worker heartbeat failed; no crash recovery until it succeeds again", { error: describeError(error) });
      this.connectionLost = true;
      return;
    }
    if (this.connectionLost) {
      // The other replicas may have lost Postgres too: give them as long to beat again as a dead one gets.
      this.connectionLost = false;
      this.recoverAfter = Date.now() + this.options.deadAfterMs;
      this.logger.info("worker heartbeat back");
    }
    if (this.stopped) return;
    try {
      await this.releaseStranded();
      if (Date.now() >= this.recoverAfter) await this.recover();
    } catch (error) {
      this.logger.warn("crash recovery round failed; it runs again at the next beat", { error: describeError(error) });
    }
  }

  /** Writes (or writes again, if a peer removed it) the row of every registered pool. */
  private async beat(): Promise<void> {
    if (this.pools.size === 0) return;
    await this.pool.query(
      `insert into mcsv_job.workers (id, hostname, pid) select unnest($1::text[]), $2, $3
       on conflict (id) do update set heartbeat_at = now()`,
      [[...this.pools], hostname(), process.pid],
    );
  }

  /** Declares silent pools dead and releases their jobs (one round; exposed for tests). */
  async recover(): Promise<RecoveryReport> {
    const deadAfterSeconds = this.options.deadAfterMs / 1000;
    const { report, notes } = await transaction(this.pool, async (db): Promise<{ report: RecoveryReport; notes: DiscardNote[] }> => {
      const lock = await db.query<{ locked: boolean; settled: boolean }>(
        `select pg_try_advisory_xact_lock($1) as locked,
                pg_postmaster_start_time() < now() - make_interval(secs => $2) as settled`,
        [RECOVERY_LOCK, deadAfterSeconds],
      );
      // Another replica is recovering, or Postgres (re)started too recently to tell the dead from the silent.
      if (!lock.rows[0]?.locked || !lock.rows[0].settled) return { report: NOTHING, notes: [] };

      const dead = await db.query<{ id: string }>(
        `with stale as (
           delete from mcsv_job.workers
           where heartbeat_at < now() - make_interval(secs => $1) and id <> all($2::text[])
           returning id
         ),
         -- Lock holders that never registered (killed between graphile's first lock and the registration).
         orphans as (
           select locked_by as id from graphile_worker._private_jobs
           where locked_by is not null and locked_at < now() - make_interval(secs => $1)
           union
           select locked_by from graphile_worker._private_job_queues
           where locked_by is not null and locked_at < now() - make_interval(secs => $1)
         )
         select id from stale
         union
         select id from orphans o
         where o.id <> all($2::text[]) and not exists (select 1 from mcsv_job.workers w where w.id = o.id)`,
        [deadAfterSeconds, [...this.pools]],
      );
      const deadWorkers = dead.rows.map((r) => r.id);
      if (deadWorkers.length === 0) return { report: NOTHING, notes: [] };
      const locked = await lockedJobs(db, `g.locked_by = any($1::text[])`, [deadWorkers]);
      const { released, notes } = await this.release(db, locked, "abandoned");
      await db.query(`select graphile_worker.force_unlock_workers($1::text[])`, [deadWorkers]);
      await finishRelease(db, locked, released.discarded);
      return { report: { deadWorkers, ...released }, notes };
    });
    this.logDiscards(notes);
    if (report.deadWorkers.length > 0) {
      deadWorkerPoolsTotal.inc(report.deadWorkers.length);
      this.logger.warn("dead job workers found; their jobs are released", {
        dead_workers: report.deadWorkers,
        given_back: report.givenBack.length,
        counted: report.counted.length,
        discarded: report.discarded.length,
      });
    }
    return report;
  }

  /**
   * Releases the jobs whose attempt ended here more than the dead-after time ago but that are still locked by this
   * process: graphile-worker 0.17 does not await (nor retry on a lost connection) the write that completes or
   * fails a job, so a Postgres outage at that moment leaves the job locked by a live pool for 4 hours.
   */
  async releaseStranded(): Promise<RecoveryReport> {
    const cutoff = Date.now() - this.options.deadAfterMs;
    const due = [...this.ended].filter(([, ended]) => ended.at < cutoff);
    if (due.length === 0 || this.pools.size === 0) return NOTHING;
    const { report, notes } = await transaction(this.pool, async (db): Promise<{ report: RecoveryReport; notes: DiscardNote[] }> => {
      // Still locked by this process for the attempt that ended (a later attempt of the same job counts one more).
      const locked = await lockedJobs(
        db,
        `g.locked_by = any($3::text[]) and (g.id, g.attempts) in (select * from unnest($1::bigint[], $2::int[]))`,
        [due.map(([id]) => id), due.map(([, ended]) => ended.attempts), [...this.pools]],
      );
      const { released, notes } = await this.release(db, locked, "stranded");
      await db.query(
        `with released as (
           update graphile_worker._private_jobs set locked_at = null, locked_by = null where id = any($1::bigint[]) returning job_queue_id
         )
         update graphile_worker._private_job_queues q set locked_at = null, locked_by = null
         from released r where q.id = r.job_queue_id and q.locked_by = any($2::text[])`,
        [locked.map((j) => j.graphile_id), [...this.pools]],
      );
      await finishRelease(db, locked, released.discarded);
      return { report: { deadWorkers: [], ...released }, notes };
    });
    this.logDiscards(notes);
    for (const [id, ended] of due) if (this.ended.get(id) === ended) this.ended.delete(id);
    const released = report.givenBack.length + report.counted.length + report.discarded.length;
    if (released > 0) {
      this.logger.warn("jobs whose end graphile-worker did not record are released", { counted: report.counted.length, discarded: report.discarded.length });
    }
    return report;
  }

  /**
   * Records each job's interrupted attempt in the ledger and adds the follow-ups of the jobs it discards; returns
   * the ledger ids by outcome.
   */
  private async release(db: PoolClient, jobs: LockedJob[], why: "abandoned" | "stranded"): Promise<{ released: Released; notes: DiscardNote[] }> {
    const released: Released = { givenBack: [], counted: [], discarded: [], followUps: [] };
    const notes: DiscardNote[] = [];
    for (const job of jobs) {
      const result = await releaseOne(db, job, why);
      released[result.outcome].push(job.ledger_id ?? `graphile:${job.graphile_id}`);
      jobAttemptsTotal.inc({ task: job.task, outcome: why });
      if (result.outcome === "discarded" && job.ledger_id !== null) {
        const discarded: DiscardedJob = {
          jobId: job.ledger_id,
          cause: why === "abandoned" ? "worker_died" : "outcome_lost",
          attempts: result.attempts,
          maxAttempts: (job.attempt_offset ?? 0) + job.max_attempts,
          givenBack: result.givenBack,
          interruptions: result.interruptions,
        };
        const note: DiscardNote = { jobId: job.ledger_id, task: job.task, graphileJobId: job.graphile_id, cause: discarded.cause };
        const input = this.followUpOf(job, discarded);
        if ("error" in input) {
          // A follow-up the task cannot describe must not block the release of every other job.
          note.followUpError = input.error;
        } else if (input.followUp) {
          // In this transaction: the discard and its follow-up commit together, or neither does (next round).
          const added = await enqueueJobInTransaction(db, input.followUp, traceOfPayload(job.payload) ?? job.trace ?? undefined);
          note.followUp = { discardedJobId: discarded.jobId, task: taskOfInput(input.followUp), jobId: added.id, duplicate: added.duplicate };
          released.followUps.push(note.followUp);
        }
        notes.push(note);
      }
    }
    return { released, notes };
  }

  /**
   * The follow-up that the discarded job's task declares (TaskDefinition.onDiscarded), checked, with a job key (its
   * own, or one derived from the discarded job and its attempt); or why there cannot be one.
   */
  private followUpOf(job: LockedJob, discarded: DiscardedJob): { followUp: EnqueueInput | undefined } | { error: string } {
    const definition = this.options.tasks?.[job.task];
    if (!definition?.onDiscarded) return { followUp: undefined };
    try {
      const decoded = definition.decode(argsOfPayload(job.payload));
      if (!decoded.ok) return { error: `its arguments do not decode: ${decoded.violations.map((v) => `${v.field}: ${v.description}`).join("; ")}` };
      const input = definition.onDiscarded(decoded.payload, discarded);
      if (!input) return { followUp: undefined };
      const followUp = { ...input, jobKey: input.jobKey || `${taskOfInput(input)}:after-discard:${discarded.jobId}:${discarded.attempts}` };
      const violations = checkEnqueueInput(followUp);
      if (violations.length > 0) return { error: `its follow-up ${taskOfInput(input)} is invalid: ${violations.map((v) => `${v.field}: ${v.description}`).join("; ")}` };
      return { followUp };
    } catch (error) {
      return { error: `onDiscarded failed: ${describeError(error)}` };
    }
  }

  /** One line per job discarded without a final attempt of its own, with its follow-up (ids only, no payload). */
  private logDiscards(notes: DiscardNote[]): void {
    for (const note of notes) {
      const fields = { job_id: note.jobId, task: note.task, graphile_job_id: note.graphileJobId, cause: note.cause };
      if (note.followUpError !== undefined) {
        discardFollowUpsTotal.inc({ task: note.task, outcome: "failed" });
        this.logger.error("job discarded by crash recovery: no attempts left; its follow-up could not be added", { ...fields, error: note.followUpError });
      } else if (note.followUp) {
        discardFollowUpsTotal.inc({ task: note.task, outcome: note.followUp.duplicate ? "duplicate" : "added" });
        this.logger.error("job discarded by crash recovery: no attempts left", fields);
        this.logger.warn("follow-up of a discarded job added", {
          ...fields,
          follow_up_job_id: note.followUp.jobId,
          follow_up_task: note.followUp.task,
          duplicate: note.followUp.duplicate,
        });
      } else {
        this.logger.error("job discarded by crash recovery: no attempts left", fields);
      }
    }
  }
}

async function lockedJobs(db: PoolClient, where: string, values: unknown[]): Promise<LockedJob[]> {
  const { rows } = await db.query<LockedJob>(
    `select g.id as graphile_id, g.attempts, g.max_attempts, g.locked_by, g.payload, t.identifier as task,
            l.id as ledger_id, l.trace, l.attempt_offset, l.abandoned_attempts, l.state
     from graphile_worker._private_jobs g
     join graphile_worker._private_tasks t on t.id = g.task_id
     left join mcsv_job.jobs l on l.graphile_job_id = g.id
     where ${where}
     for update of g`,
    values,
  );
  return rows;
}

/**
 * The ledger's side of one released job. An abandoned attempt (its worker died) is given back, at most
 * MAX_GIVEN_BACK times per job; a stranded one (it ran to its end; only graphile's record of that was lost) counts,
 * as graphile already counted it, and keeps the error the task wrapper recorded if it could. A job with no attempt
 * left is discarded. A crontab job without a ledger row yet, or a job that finished (or was cancelled) in the
 * ledger, is released as is: the task wrapper skips a finished one and graphile lets it go.
 */
async function releaseOne(
  db: PoolClient,
  job: LockedJob,
  why: "abandoned" | "stranded",
): Promise<{ outcome: "givenBack" | "counted" | "discarded"; attempts: number; givenBack: number; interruptions: number }> {
  if (job.ledger_id === null || job.state !== "pending") return { outcome: "counted", attempts: job.attempts, givenBack: 0, interruptions: 0 };
  const attempt = (job.attempt_offset ?? 0) + job.attempts;
  const giveBack = why === "abandoned" && (job.abandoned_attempts ?? 0) < MAX_GIVEN_BACK && job.attempts > 0;
  const final = !giveBack && job.attempts >= job.max_attempts;
  const outcome = giveBack ? "; the attempt is given back" : final ? "; no attempts left" : "";
  const error = (
    why === "abandoned"
      ? `attempt abandoned: its worker ${job.locked_by} stopped beating (the process died or lost Postgres)${outcome}`
      : `the end of the attempt was not recorded (Postgres unreachable at that moment); released${outcome}`
  ).slice(0, MAX_ERROR_LENGTH);
  if (giveBack) await db.query(`update graphile_worker._private_jobs set attempts = attempts - 1 where id = $1`, [job.graphile_id]);
  const { rows } = await db.query<{ attempts: number; abandoned_attempts: number; interruptions: number }>(
    `update mcsv_job.jobs
     set errors = case when $7 and exists (select 1 from jsonb_array_elements(errors) e where (e->>'attempt')::int = $2) then errors
                       else errors || jsonb_build_array(jsonb_build_object('attempt', $2::int, 'error', $3::text, 'at', now())) end,
         attempts = $4,
         abandoned_attempts = abandoned_attempts + case when $5 then 1 else 0 end,
         state = case when $6 then 'discarded' else state end,
         discarded_at = case when $6 then now() else discarded_at end
     where id = $1
     returning attempts, abandoned_attempts,
               (select count(*) from jsonb_array_elements(errors) e where e->>'error' like 'attempt abandoned:%')::int as interruptions`,
    [job.ledger_id, attempt, error, giveBack ? attempt - 1 : attempt, giveBack, final, why === "stranded"],
  );
  const row = rows[0] ?? { attempts: attempt, abandoned_attempts: 0, interruptions: 0 };
  return { outcome: giveBack ? "givenBack" : final ? "discarded" : "counted", attempts: row.attempts, givenBack: row.abandoned_attempts, interruptions: row.interruptions };
}

/** Deletes graphile's rows of the discarded jobs (the ledger holds their outcome) and wakes the workers for the rest. */
async function finishRelease(db: PoolClient, jobs: LockedJob[], discardedLedgerIds: string[]): Promise<void> {
  const discarded = jobs.filter((j) => j.ledger_id !== null && discardedLedgerIds.includes(j.ledger_id)).map((j) => j.graphile_id);
  if (discarded.length > 0) await db.query(`select id from graphile_worker.complete_jobs($1::bigint[])`, [discarded]);
  const released = jobs.length - discarded.length;
  // Wakes idle workers of every replica now instead of at their next poll.
  if (released > 0) await db.query(`select pg_notify('jobs:insert', $1)`, [JSON.stringify({ count: released })]);
}
