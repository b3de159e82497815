/**
 * Crash recovery (services/job/crash-recovery.ts): the job service registers its worker pool and beats; a pool that
 * stops beating is declared dead by a replica, which releases its jobs with the ledger kept right. A dead pool is
 * simulated on the database exactly as graphile leaves one (the job locked by the pool's id, one attempt taken);
 * test/chaos/processes.test.ts kills a real process.
 */
import pg from "pg";
import { JobState } from "@mcsv/sdk";
import { ConfigError } from "../../services/shared/config.js";
import { loadJobConfig } from "../../services/job/config.js";
import { CrashRecovery, MAX_GIVEN_BACK } from "../../services/job/crash-recovery.js";
import { serviceAuthEnv } from "../support/credentials.js";
import { eventually, startJobTestEnv, type JobTestEnv } from "./support.js";

let env: JobTestEnv;
let db: pg.Pool;

beforeAll(async () => {
  env = await startJobTestEnv({ JOB_WORKER_HEARTBEAT_MS: "200", JOB_WORKER_DEAD_AFTER_MS: "1000" });
  db = new pg.Pool({ connectionString: env.pg.url, max: 2, application_name: "crash-recovery-test" });
  db.on("error", () => undefined);
});

afterAll(async () => {
  await db?.end();
  await env?.close();
});

beforeEach(() => env.stubs.reset());

const inAnHour = () => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) });

function welcome(key: string) {
  return { request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: key } };
}

const sendsFor = (key: string) => env.stubs.calls.sendEmail.filter((r) => r.idempotencyKey === key).length;

/** A send_email job that no worker takes on its own (it is due in an hour). */
async function parkedJob(key: string, maxAttempts = 0): Promise<{ id: string; graphileId: string }> {
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome(key), runAt: inAnHour(), maxAttempts });
  const { rows } = await db.query<{ graphile_job_id: string }>(`select graphile_job_id from mcsv_job.jobs where id = $1`, [job!.id]);
  return { id: job!.id, graphileId: rows[0]!.graphile_job_id };
}

/** What graphile and the task wrapper leave when `poolId` took the job and then died mid-attempt. */
async function takenBy(job: { id: string; graphileId: string }, poolId: string, lockedSecondsAgo = 0): Promise<void> {
  await db.query(
    `update graphile_worker._private_jobs
     set attempts = attempts + 1, locked_by = $2, locked_at = now() - make_interval(secs => $3), run_at = now() - interval '1 second'
     where id = $1`,
    [job.graphileId, poolId, lockedSecondsAgo],
  );
  await db.query(
    `update mcsv_job.jobs l set attempts = l.attempt_offset + g.attempts, attempted_at = now()
     from graphile_worker._private_jobs g where g.id = l.graphile_job_id and l.id = $1`,
    [job.id],
  );
}

async function registered(poolId: string, heartbeatSecondsAgo: number): Promise<void> {
  await db.query(
    `insert into mcsv_job.workers (id, hostname, pid, heartbeat_at) values ($1, 'elsewhere', 1, now() - make_interval(secs => $2))`,
    [poolId, heartbeatSecondsAgo],
  );
}

const lockOf = async (graphileId: string) =>
  (await db.query<{ locked_by: string | null; attempts: number }>(`select locked_by, attempts from graphile_worker._private_jobs where id = $1`, [graphileId])).rows[0];

test("the service registers its worker pool and keeps its heartbeat fresh", async () => {
  const first = await eventually(
    async () => (await db.query<{ id: string; pid: number; heartbeat_at: Date }>(`select id, pid, heartbeat_at from mcsv_job.workers where pid = $1`, [process.pid])).rows,
    (rows) => rows.length === 1,
  );
  expect(first[0]!.id).toMatch(/^pool-/);
  await eventually(
    async () => (await db.query<{ heartbeat_at: Date }>(`select heartbeat_at from mcsv_job.workers where id = $1`, [first[0]!.id])).rows[0]!.heartbeat_at,
    (at) => at.getTime() > first[0]!.heartbeat_at.getTime(),
  );
});

test("a dead pool's job runs again at once, its abandoned attempt given back and recorded", async () => {
  const job = await parkedJob("dead-pool");
  await registered("pool-dead-1", 60);
  await takenBy(job, "pool-dead-1");

  const done = await env.waitForState(job.id, JobState.COMPLETED);
  expect(done.attempts).toBe(1);
  expect(done.errors).toHaveLength(1);
  expect(done.errors[0]).toMatchObject({ attempt: 1 });
  expect(done.errors[0]!.error).toMatch(/abandoned: its worker pool-dead-1 stopped beating.*given back/);
  expect(sendsFor("dead-pool")).toBe(1);
  expect((await db.query(`select 1 from mcsv_job.workers where id = 'pool-dead-1'`)).rowCount).toBe(0);
});

test("a lock holder that never registered is dead once its lock is older than the dead-after time", async () => {
  const job = await parkedJob("ghost-pool");
  await takenBy(job, "pool-ghost", 30);
  await env.waitForState(job.id, JobState.COMPLETED);
  expect(sendsFor("ghost-pool")).toBe(1);
});

test("a pool that still beats keeps its job while a dead one's is released in the same round", async () => {
  const alive = await parkedJob("alive-pool");
  const dead = await parkedJob("dead-pool-2");
  await registered("pool-alive", 0);
  const beating = setInterval(() => void db.query(`update mcsv_job.workers set heartbeat_at = now() where id = 'pool-alive'`).catch(() => undefined), 100);
  try {
    await takenBy(alive, "pool-alive");
    await registered("pool-dead-2", 60);
    await takenBy(dead, "pool-dead-2");
    await env.waitForState(dead.id, JobState.COMPLETED);
    expect(await lockOf(alive.graphileId)).toEqual({ locked_by: "pool-alive", attempts: 1 });
    expect((await env.jobs.getJobStatus({ id: alive.id })).job!.state).toBe(JobState.EXECUTING);
  } finally {
    clearInterval(beating);
    // Let the test's pretend pool die: its job is then released and runs.
    await db.query(`update mcsv_job.workers set heartbeat_at = now() - interval '1 minute' where id = 'pool-alive'`);
  }
  await env.waitForState(alive.id, JobState.COMPLETED);
  expect(sendsFor("alive-pool")).toBe(1);
});

test(`after ${MAX_GIVEN_BACK} given back, an abandoned attempt counts, and a job with none left is discarded`, async () => {
  const counted = await parkedJob("abandoned-counted", 3);
  const last = await parkedJob("abandoned-last", 2);
  await db.query(`update mcsv_job.jobs set abandoned_attempts = $2 where id = any($1::bigint[])`, [[counted.id, last.id], MAX_GIVEN_BACK]);
  // The last job already used its first attempt; the second (its last) is the one that dies.
  await db.query(`update graphile_worker._private_jobs set attempts = 1 where id = $1`, [last.graphileId]);
  await registered("pool-dead-3", 60);
  await takenBy(counted, "pool-dead-3");
  await takenBy(last, "pool-dead-3");

  const discarded = await env.waitForState(last.id, JobState.DISCARDED);
  expect(discarded).toMatchObject({ attempts: 2, maxAttempts: 2 });
  expect(discarded.errors.at(-1)!.error).toMatch(/abandoned.*no attempts left/);
  expect(await lockOf(last.graphileId)).toBeUndefined();
  expect(sendsFor("abandoned-last")).toBe(0);

  const done = await env.waitForState(counted.id, JobState.COMPLETED);
  expect(done.attempts).toBe(2);
  expect(done.errors[0]).toMatchObject({ attempt: 1 });
  expect(sendsFor("abandoned-counted")).toBe(1);
});

test("the dead-after time must leave room for missed beats", () => {
  const base = { ...serviceAuthEnv("job"), DATABASE_URL: "postgres://x@127.0.0.1/x" };
  expect(() => loadJobConfig({ ...base, JOB_WORKER_HEARTBEAT_MS: "5000", JOB_WORKER_DEAD_AFTER_MS: "6000" })).toThrow(ConfigError);
  expect(loadJobConfig(base)).toMatchObject({ JOB_WORKER_HEARTBEAT_MS: 5_000, JOB_WORKER_DEAD_AFTER_MS: 30_000 });
});

test("a job whose end graphile did not record (Postgres away at that moment) is released by its own process", async () => {
  // This process's own recovery, as the service wires it: a pool that is alive and beating.
  const recovery = new CrashRecovery(db, env.logger, { heartbeatMs: 200, deadAfterMs: 1000 });
  recovery.register("pool-self");
  // Its beats (not started: the test calls releaseStranded itself), so that the service does not find it dead.
  const beating = setInterval(() => void db.query(`update mcsv_job.workers set heartbeat_at = now() where id = 'pool-self'`).catch(() => undefined), 100);
  let runningAgain: { id: string; graphileId: string } | undefined;
  try {
    const succeeded = await parkedJob("stranded-succeeded");
    const failed = await parkedJob("stranded-failed");
    runningAgain = await parkedJob("stranded-running-again");
    await takenBy(succeeded, "pool-self");
    await takenBy(failed, "pool-self");
    // Its first attempt ended and was recorded; this process runs its second attempt now.
    await takenBy(runningAgain, "pool-self");
    recovery.jobEnded({ id: runningAgain.graphileId, attempts: 1 });
    await takenBy(runningAgain, "pool-self");
    // The first ran to success and the wrapper recorded it; the second failed and the wrapper recorded the error.
    await db.query(`update mcsv_job.jobs set state = 'completed', completed_at = now() where id = $1`, [succeeded.id]);
    await db.query(`update mcsv_job.jobs set errors = '[{"attempt": 1, "error": "email service unavailable", "at": "2026-01-01T00:00:00Z"}]' where id = $1`, [failed.id]);
    // Both attempts ended, but graphile's completing and failing writes were lost.
    recovery.jobEnded({ id: succeeded.graphileId, attempts: 1 });
    recovery.jobEnded({ id: failed.graphileId, attempts: 1 });

    // Not before the dead-after time: the write may just be late.
    expect(await recovery.releaseStranded()).toMatchObject({ counted: [], discarded: [] });
    await new Promise((r) => setTimeout(r, 1_100));
    const released = await recovery.releaseStranded();
    expect([...released.counted].sort()).toEqual([succeeded.id, failed.id].sort());
    expect(released.givenBack).toEqual([]);

    // The completed one is not run again (the wrapper skips it and graphile lets it go); the failed one runs as attempt 2.
    await eventually(() => lockOf(succeeded.graphileId), (row) => row === undefined);
    expect(sendsFor("stranded-succeeded")).toBe(0);
    const done = await env.waitForState(failed.id, JobState.COMPLETED);
    expect(done.attempts).toBe(2);
    expect(done.errors).toEqual([expect.objectContaining({ attempt: 1, error: "email service unavailable" })]);
    expect(sendsFor("stranded-failed")).toBe(1);
    expect(await lockOf(runningAgain.graphileId)).toEqual({ locked_by: "pool-self", attempts: 2 });
    // Each ended job is looked at once.
    expect(await recovery.releaseStranded()).toMatchObject({ counted: [] });
  } finally {
    clearInterval(beating);
    await recovery.stop();
  }
  // With the pretend process gone (unregistered), the job it was running is an orphan, released and run.
  await env.waitForState(runningAgain!.id, JobState.COMPLETED);
});
