/**
 * Leases, and crash recovery as their expiry.
 *
 * Every attempt holds a lease on its job (ledger.ts), which this process renews every JOB_WORKER_HEARTBEAT_MS
 * while the attempt runs. When a process dies (SIGKILL, out of memory, a lost node) or loses Postgres, its leases
 * are not renewed and expire after JOB_WORKER_DEAD_AFTER_MS; at its next beat any replica abandons those attempts
 * and dispatches their jobs again (or discards a job with no attempt left, adding the follow-up its task declares
 * in the same transaction). Replicas recover side by side: each locks the rows it takes (`skip locked`).
 *
 * The graphile worker pools of this process are registered in mcsv_job.workers and beat with it. A pool that has
 * been silent as long is dead, and graphile is told to let go of what it had locked for it (its public
 * force_unlock_workers; graphile itself waits 4 hours): those dispatches then run and find themselves stale.
 *
 * A process that is only slow to beat (a long pause) may find its attempt superseded: its outcome then changes
 * nothing, and the tasks are idempotent (job keys, deterministic object keys, Resend idempotency keys), so the
 * repeat does no harm. Nobody is judged right after Postgres itself (re)started, or right after this process lost
 * its own connection: no lease could be renewed meanwhile.
 */
import { hostname } from "node:os";
import { transaction, type Pool, type PoolClient } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import type { Logger } from "../shared/logger.js";
import { unlockDeadWorkers } from "./dispatcher.js";
import { checkEnqueueInput, enqueueJobInTransaction, taskOfInput, type EnqueueInput } from "./enqueue.js";
import type { Attempt, ExpiredLease, JobLedger } from "./ledger.js";
import { deadWorkerPoolsTotal, discardFollowUpsTotal, jobAttemptsTotal } from "./metrics.js";
import type { AnyTaskDefinition, DiscardedJob } from "./tasks/context.js";

/** Expired leases taken per transaction (a round takes more in the next one). */
const BATCH = 200;

export interface LeaseOptions {
  heartbeatMs: number;
  /** A lease lasts this long past its last renewal; a worker pool silent this long is dead. */
  leaseMs: number;
  /** The task definitions by identifier, for their onDiscarded follow-ups. */
  tasks?: Readonly<Record<string, Pick<AnyTaskDefinition, "decode" | "onDiscarded">>> | undefined;
}

/** What one recovery round did. */
export interface RecoveryReport {
  /** Worker pools declared dead, whose locks graphile was told to release. */
  deadWorkers: string[];
  /** Jobs whose lease expired, by what happened to the abandoned attempt. */
  givenBack: string[];
  counted: string[];
  discarded: string[];
  /** Jobs cancelled while their attempt ran, whose lease was just dropped. */
  released: string[];
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

const nothing = (): RecoveryReport => ({ deadWorkers: [], givenBack: [], counted: [], discarded: [], released: [], followUps: [] });

export class LeaseKeeper {
  private readonly pools = new Set<string>();
  /** The attempts running here, by job id and dispatch. */
  private readonly held = new Map<string, { id: string; dispatch: number; lost: AbortController }>();
  private timer: NodeJS.Timeout | undefined;
  private round: Promise<void> | undefined;
  private stopped = false;
  private connectionLost = false;
  /** No recovery before this time (epoch ms): at once on start-up, a lease's length after this process lost Postgres. */
  private recoverAfter = 0;

  constructor(
    private readonly pool: Pool,
    private readonly ledger: Pick<JobLedger, "renewLeases" | "expiredLeases" | "abandon">,
    private readonly logger: Logger,
    private readonly options: LeaseOptions,
  ) {}

  get leaseSeconds(): number {
    return this.options.leaseMs / 1000;
  }

  /** Registers a worker pool (graphile's `pool:create`); its row is written at once and at every beat. */
  register(id: string): void {
    this.pools.add(id);
    void this.beat().catch(() => undefined);
  }

  /** A pool that stopped cleanly (graphile's `pool:release`). */
  async unregister(id: string): Promise<void> {
    this.pools.delete(id);
    await this.pool.query(`delete from mcsv_job.workers where id = $1`, [id]);
  }

  /**
   * Keeps the lease of `attempt` renewed until `release` is called. `signal` aborts when a beat finds the lease
   * lost (recovery gave the job to another attempt): this attempt's outcome would change nothing, so it stops.
   */
  hold(attempt: Pick<Attempt, "id" | "dispatch">): { signal: AbortSignal; release(): void } {
    const key = `${attempt.id}:${attempt.dispatch}`;
    const lost = new AbortController();
    this.held.set(key, { id: attempt.id, dispatch: attempt.dispatch, lost });
    return { signal: lost.signal, release: () => void this.held.delete(key) };
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
        // The rows age; a peer (or the next start) declares them dead.
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
      if (!this.connectionLost) this.logger.warn("worker heartbeat failed; no lease renewed and no recovery until it succeeds again", { error: describeError(error) });
      this.connectionLost = true;
      return;
    }
    if (this.connectionLost) {
      // The other replicas may have lost Postgres too: give them a lease's length to renew theirs.
      this.connectionLost = false;
      this.recoverAfter = Date.now() + this.options.leaseMs;
      this.logger.info("worker heartbeat back");
    }
    if (this.stopped || Date.now() < this.recoverAfter) return;
    try {
      await this.recover();
    } catch (error) {
      this.logger.warn("crash recovery round failed; it runs again at the next beat", { error: describeError(error) });
    }
  }

  /** Writes the row of every registered pool and renews the lease of every attempt running here. */
  private async beat(): Promise<void> {
    if (this.pools.size > 0) {
      await this.pool.query(
        `insert into mcsv_job.workers (id, hostname, pid) select unnest($1::text[]), $2, $3
         on conflict (id) do update set heartbeat_at = now()`,
        [[...this.pools], hostname(), process.pid],
      );
    }
    const held = [...this.held.entries()];
    const renewed = await this.ledger.renewLeases(held.map(([, h]) => h), [...this.pools], this.leaseSeconds);
    for (const [key, attempt] of held) {
      // Released meanwhile (its outcome cleared the lease), or lost.
      if (!renewed.has(key) && this.held.get(key) === attempt) attempt.lost.abort(new Error("the attempt lost its lease: the job was given to another attempt"));
    }
  }

  /** Abandons the attempts whose lease expired and unlocks the dead pools' jobs (one round; exposed for tests). */
  async recover(): Promise<RecoveryReport> {
    const report = nothing();
    for (;;) {
      const round = await transaction(this.pool, (db) => this.recoverBatch(db));
      for (const key of ["deadWorkers", "givenBack", "counted", "discarded", "released", "followUps"] as const) (report[key] as unknown[]).push(...round.report[key]);
      if (!round.more) break;
    }
    const abandoned = report.givenBack.length + report.counted.length + report.discarded.length;
    if (report.deadWorkers.length > 0) deadWorkerPoolsTotal.inc(report.deadWorkers.length);
    if (abandoned > 0 || report.deadWorkers.length > 0) {
      this.logger.warn("expired job leases found; their attempts are abandoned and the jobs dispatched again", {
        dead_workers: report.deadWorkers,
        given_back: report.givenBack.length,
        counted: report.counted.length,
        discarded: report.discarded.length,
      });
    }
    return report;
  }

  private async recoverBatch(db: PoolClient): Promise<{ report: RecoveryReport; more: boolean }> {
    const report = nothing();
    const settled = await db.query<{ settled: boolean }>(
      `select pg_postmaster_start_time() < now() - make_interval(secs => $1) as settled`,
      [this.leaseSeconds],
    );
    // Postgres (re)started too recently to tell the dead from those that could not renew.
    if (!settled.rows[0]?.settled) return { report, more: false };

    const expired = await this.ledger.expiredLeases(db, BATCH);
    for (const job of expired) {
      const error = `attempt abandoned: its lease expired (worker ${job.owner} stopped renewing it: the process died, paused or lost Postgres)`;
      const outcome = await this.ledger.abandon(db, job, error);
      report[outcome].push(job.id);
      jobAttemptsTotal.inc({ task: job.task, outcome: outcome === "released" ? "cancelled" : "abandoned" });
      if (outcome === "discarded") await this.addFollowUp(db, job, report);
    }

    // Pools silent for a lease's length, and owners of expired leases that never registered, are dead.
    const dead = await db.query<{ id: string }>(
      `with stale as (
         delete from mcsv_job.workers where heartbeat_at < now() - make_interval(secs => $1) and id <> all($2::text[])
         returning id
       )
       select id from stale
       union
       select o.id from unnest($3::text[]) o(id)
       where o.id <> all($2::text[]) and not exists (select 1 from mcsv_job.workers w where w.id = o.id)`,
      [this.leaseSeconds, [...this.pools], [...new Set(expired.map((j) => j.owner))]],
    );
    report.deadWorkers = dead.rows.map((r) => r.id);
    await unlockDeadWorkers(db, report.deadWorkers);
    return { report, more: expired.length === BATCH };
  }

  /** Adds, in the discard's transaction, the follow-up that the discarded job's task declares; logs either way. */
  private async addFollowUp(db: PoolClient, job: ExpiredLease, report: RecoveryReport): Promise<void> {
    const discarded: DiscardedJob = {
      jobId: job.id,
      cause: "lease_expired",
      attempts: job.attempts,
      maxAttempts: job.maxAttempts,
      givenBack: job.givenBack,
      interruptions: job.expiredLeases + 1,
    };
    const fields = { job_id: job.id, task: job.task, cause: discarded.cause };
    const input = this.followUpOf(job, discarded);
    if ("error" in input) {
      // A follow-up the task cannot describe must not block the recovery of every other job.
      discardFollowUpsTotal.inc({ task: job.task, outcome: "failed" });
      this.logger.error("job discarded: its lease expired with no attempts left; its follow-up could not be added", { ...fields, error: input.error });
      return;
    }
    this.logger.error("job discarded: its lease expired with no attempts left", fields);
    if (!input.followUp) return;
    const added = await enqueueJobInTransaction(db, input.followUp, job.trace ?? undefined);
    const followUp = { discardedJobId: job.id, task: taskOfInput(input.followUp), jobId: added.id, duplicate: added.duplicate };
    report.followUps.push(followUp);
    discardFollowUpsTotal.inc({ task: job.task, outcome: added.duplicate ? "duplicate" : "added" });
    this.logger.warn("follow-up of a discarded job added", { ...fields, follow_up_job_id: added.id, follow_up_task: followUp.task, duplicate: added.duplicate });
  }

  /**
   * The follow-up that the discarded job's task declares (TaskDefinition.onDiscarded), checked, with a job key (its
   * own, or one derived from the discarded job and its attempt); or why there cannot be one.
   */
  private followUpOf(job: ExpiredLease, discarded: DiscardedJob): { followUp: EnqueueInput | undefined } | { error: string } {
    const definition = this.options.tasks?.[job.task];
    if (!definition?.onDiscarded) return { followUp: undefined };
    try {
      const decoded = definition.decode(job.args);
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
}
