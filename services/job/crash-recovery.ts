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
 * A pool that is only slow to beat (a long pause) may find a job released and run it a second time; the tasks are
 * idempotent (job keys, deterministic object keys, Resend idempotency keys), so a repeat does no harm. Nobody is
 * judged right after Postgres itself (re)started, or right after this process lost its own connection: no
 * heartbeat could be written meanwhile.
 */
import { hostname } from "node:os";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { deadWorkerPoolsTotal, jobAttemptsTotal } from "./metrics.js";

/** Abandoned attempts given back per job; later ones count. */
export const MAX_GIVEN_BACK = 3;

/** Longest error message kept per attempt (as the ledger's). */
const MAX_ERROR_LENGTH = 2_000;

/** One recovery at a time across replicas (an arbitrary constant key of pg_try_advisory_xact_lock). */
const RECOVERY_LOCK = 0x6d637376; // "mcsv"

export interface CrashRecoveryOptions {
  heartbeatMs: number;
  deadAfterMs: number;
}

/** What one recovery round did. */
export interface RecoveryReport {
  /** Worker pools declared dead (registered pools that stopped beating, and lock holders that never registered). */
  deadWorkers: string[];
  /** Jobs released, by what happened to their abandoned attempt. */
  givenBack: string[];
  counted: string[];
  discarded: string[];
}

const NOTHING: RecoveryReport = { deadWorkers: [], givenBack: [], counted: [], discarded: [] };

interface LockedJob {
  graphile_id: string;
  task: string;
  attempts: number;
  max_attempts: number;
  locked_by: string;
  ledger_id: string | null;
  attempt_offset: number | null;
  abandoned_attempts: number | null;
  state: string | null;
}

export class CrashRecovery {
  private readonly pools = new Set<string>();
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
    if (this.stopped || Date.now() < this.recoverAfter) return;
    try {
      await this.recover();
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
    const report = await transaction(this.pool, async (db) => {
      const lock = await db.query<{ locked: boolean; settled: boolean }>(
        `select pg_try_advisory_xact_lock($1) as locked,
                pg_postmaster_start_time() < now() - make_interval(secs => $2) as settled`,
        [RECOVERY_LOCK, deadAfterSeconds],
      );
      // Another replica is recovering, or Postgres (re)started too recently to tell the dead from the silent.
      if (!lock.rows[0]?.locked || !lock.rows[0].settled) return NOTHING;

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
      if (deadWorkers.length === 0) return NOTHING;

      const locked = await db.query<LockedJob>(
        `select g.id as graphile_id, g.attempts, g.max_attempts, g.locked_by, t.identifier as task,
                l.id as ledger_id, l.attempt_offset, l.abandoned_attempts, l.state
         from graphile_worker._private_jobs g
         join graphile_worker._private_tasks t on t.id = g.task_id
         left join mcsv_job.jobs l on l.graphile_job_id = g.id
         where g.locked_by = any($1::text[])
         for update of g`,
        [deadWorkers],
      );
      const result: RecoveryReport = { deadWorkers, givenBack: [], counted: [], discarded: [] };
      const discardedGraphileIds: string[] = [];
      for (const job of locked.rows) {
        const outcome = await this.releaseOne(db, job);
        result[outcome].push(job.ledger_id ?? `graphile:${job.graphile_id}`);
        if (outcome === "discarded") discardedGraphileIds.push(job.graphile_id);
        jobAttemptsTotal.inc({ task: job.task, outcome: "abandoned" });
      }
      await db.query(`select graphile_worker.force_unlock_workers($1::text[])`, [deadWorkers]);
      // The ledger holds their outcome; graphile's rows go, as the task wrapper lets them go after a last failure.
      if (discardedGraphileIds.length > 0) await db.query(`select id from graphile_worker.complete_jobs($1::bigint[])`, [discardedGraphileIds]);
      const released = locked.rows.length - discardedGraphileIds.length;
      // Wakes idle workers of every replica now instead of at their next poll.
      if (released > 0) await db.query(`select pg_notify('jobs:insert', $1)`, [JSON.stringify({ count: released })]);
      return result;
    });
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

  private async releaseOne(db: PoolClient, job: LockedJob): Promise<"givenBack" | "counted" | "discarded"> {
    const pending = job.ledger_id !== null && job.state === "pending";
    // A crontab job without a ledger row yet, or one that finished (or was cancelled) before its worker died:
    // released as is; the task wrapper skips a finished one.
    if (!pending) return "counted";
    const attempt = (job.attempt_offset ?? 0) + job.attempts;
    const giveBack = (job.abandoned_attempts ?? 0) < MAX_GIVEN_BACK && job.attempts > 0;
    const final = !giveBack && job.attempts >= job.max_attempts;
    const error = `attempt abandoned: its worker ${job.locked_by} stopped beating (the process died or lost Postgres)${
      giveBack ? "; the attempt is given back" : final ? "; no attempts left" : ""
    }`.slice(0, MAX_ERROR_LENGTH);
    if (giveBack) await db.query(`update graphile_worker._private_jobs set attempts = attempts - 1 where id = $1`, [job.graphile_id]);
    await db.query(
      `update mcsv_job.jobs
       set errors = errors || jsonb_build_array(jsonb_build_object('attempt', $2::int, 'error', $3::text, 'at', now())),
           attempts = $4,
           abandoned_attempts = abandoned_attempts + case when $5 then 1 else 0 end,
           state = case when $6 then 'discarded' else state end,
           discarded_at = case when $6 then now() else discarded_at end
       where id = $1`,
      [job.ledger_id, attempt, error, giveBack ? attempt - 1 : attempt, giveBack, final],
    );
    return giveBack ? "givenBack" : final ? "discarded" : "counted";
  }
}
