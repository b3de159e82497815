/**
 * Leases and crash recovery against the real job service (graphile-worker on an embedded Postgres). A worker that
 * dies mid-attempt is faked the one way the ledger can tell: its attempt's lease is handed to a pool that no longer
 * renews it, and has expired. Nothing of graphile-worker's is touched; it only dispatches.
 */
import pg from "pg";
import { JobState } from "@mcsv/sdk";
import { loadJobConfig } from "../../services/job/config.js";
import { MAX_GIVEN_BACK } from "../../services/job/ledger.js";
import { jobAttemptsTotal } from "../../services/job/metrics.js";
import { deferred, eventually, startJobTestEnv, type Deferred, type JobTestEnv } from "./support.js";
import { serviceAuthEnv } from "../support/credentials.js";

const HEARTBEAT_MS = 200;
const LEASE_MS = 1_000;

let env: JobTestEnv;
let db: pg.Pool;

beforeAll(async () => {
  env = await startJobTestEnv({ JOB_WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS), JOB_WORKER_DEAD_AFTER_MS: String(LEASE_MS) });
  db = new pg.Pool({ connectionString: env.pg.url, max: 2, application_name: "leases-test" });
  db.on("error", () => undefined);
});

afterAll(async () => {
  await db?.end();
  await env?.close();
});

/** Hung sends, by idempotency key, until the test lets them answer. */
const hung = new Map<string, Deferred>();
beforeEach(() => {
  env.stubs.reset();
  env.stubs.methods.sendEmail = async (req) => {
    await hung.get(req.idempotencyKey)?.promise;
    return { success: true, message: "sent", emailId: `email-${req.idempotencyKey}` };
  };
});
afterEach(() => {
  for (const gate of hung.values()) gate.resolve();
  hung.clear();
});

const welcome = (key: string) => ({ request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: key } });
const sendsFor = (key: string) => env.stubs.calls.sendEmail.filter((r) => r.idempotencyKey === key).length;

interface LeaseRow {
  state: string;
  dispatch: number;
  attempts: number;
  lease_owner: string | null;
  lease_live: boolean | null;
  abandoned_attempts: number;
  expired_leases: number;
}
const leaseOf = async (id: string) =>
  (
    await db.query<LeaseRow>(
      `select state, dispatch, attempts, lease_owner, lease_expires_at > now() as lease_live, abandoned_attempts, expired_leases from mcsv_job.jobs where id = $1`,
      [id],
    )
  ).rows[0]!;

/** The attempt in progress loses its worker: its lease now belongs to `owner`, which stopped renewing it a second ago. */
async function workerDies(id: string, owner: string): Promise<void> {
  const { rowCount } = await db.query(
    `update mcsv_job.jobs set lease_owner = $2, lease_expires_at = now() - interval '1 second' where id = $1 and state = 'executing'`,
    [id, owner],
  );
  expect(rowCount).toBe(1);
}

async function attemptsEnded(task: string, outcome: string): Promise<number> {
  return (await jobAttemptsTotal.get()).values.find((v) => v.labels["task"] === task && v.labels["outcome"] === outcome)?.value ?? 0;
}
const skipped = (task: string) => attemptsEnded(task, "skipped");
const superseded = (task: string) => attemptsEnded(task, "superseded");

test("an attempt holds a lease owned by its registered worker pool, renewed while it runs, and dropped when it ends", async () => {
  const gate = deferred();
  hung.set("lease-long", gate);
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("lease-long") });
  await eventually(() => leaseOf(job!.id), (row) => row.state === "executing");
  const pools = (await db.query<{ id: string }>(`select id from mcsv_job.workers`)).rows.map((r) => r.id);
  expect(pools).toContain((await leaseOf(job!.id)).lease_owner);

  // Three lease lengths later the attempt still holds its lease: nobody took the job away.
  await new Promise((resolve) => setTimeout(resolve, 3 * LEASE_MS));
  expect(await leaseOf(job!.id)).toMatchObject({ state: "executing", dispatch: 1, attempts: 1, lease_live: true, expired_leases: 0 });
  gate.resolve();
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(done).toMatchObject({ attempts: 1, errors: [] });
  expect(await leaseOf(job!.id)).toMatchObject({ lease_owner: null, lease_live: null });
  expect(sendsFor("lease-long")).toBe(1);
});

test(`a dead worker's attempt is given back ${MAX_GIVEN_BACK} times, then counts; out of attempts the job is discarded, and late outcomes change nothing`, async () => {
  hung.set("lease-poison", deferred());
  const supersededBefore = await superseded("send_email");
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("lease-poison"), maxAttempts: 2 });
  const deaths = MAX_GIVEN_BACK + 2;
  for (let death = 1; death <= deaths; death++) {
    const running = await eventually(() => leaseOf(job!.id), (row) => row.state === "executing" && row.dispatch === death);
    expect(running.attempts).toBe(death <= MAX_GIVEN_BACK ? 1 : death - MAX_GIVEN_BACK);
    await workerDies(job!.id, `pool-dead-${death}`);
    await eventually(() => leaseOf(job!.id), (row) => row.state !== "executing" || row.dispatch > death);
  }
  const discarded = await env.waitForState(job!.id, JobState.DISCARDED);
  expect(discarded).toMatchObject({ attempts: 2, maxAttempts: 2 });
  expect(discarded.errors.map((e) => e.attempt)).toEqual([1, 1, 1, 1, 2]);
  for (const [i, e] of discarded.errors.entries()) expect(e.error).toContain(`lease expired (worker pool-dead-${i + 1} stopped renewing it`);
  expect(await leaseOf(job!.id)).toMatchObject({ abandoned_attempts: MAX_GIVEN_BACK, expired_leases: deaths, lease_owner: null });

  // Every attempt really ran (and hung). Each was told to stop once a beat found its lease lost, so none holds a
  // worker slot (the service runs 4 at once); none of them changed the job.
  expect(sendsFor("lease-poison")).toBe(deaths);
  await eventually(() => superseded("send_email"), (n) => n === supersededBefore + deaths);
  expect((await env.jobs.getJobStatus({ id: job!.id })).job).toMatchObject({ state: JobState.DISCARDED, attempts: 2 });
  expect((await leaseOf(job!.id)).dispatch).toBe(deaths);
});

test("a dispatch whose ticket is stale, or whose job already ended, runs nothing", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("lease-stale") });
  await env.waitForState(job!.id, JobState.COMPLETED);
  const before = await skipped("send_email");
  // Two dispatches graphile did not forget: one of an older dispatch number, and the job's own (already completed).
  await db.query(`select graphile_worker.add_job('send_email', json_build_object('job', $1::text, 'dispatch', 0))`, [job!.id]);
  await db.query(`select graphile_worker.add_job('send_email', json_build_object('job', $1::text, 'dispatch', 1))`, [job!.id]);
  await eventually(() => skipped("send_email"), (n) => n === before + 2);
  expect(sendsFor("lease-stale")).toBe(1);
  expect((await env.jobs.getJobStatus({ id: job!.id })).job).toMatchObject({ state: JobState.COMPLETED, attempts: 1 });
});

test("a cancelled job whose worker died loses the lease and stays cancelled", async () => {
  hung.set("lease-cancelled", deferred());
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("lease-cancelled") });
  await eventually(() => leaseOf(job!.id), (row) => row.state === "executing");
  await env.jobs.cancelJob({ id: job!.id });
  // Still finishing its attempt: it cannot be retried yet.
  await expect(env.jobs.retryJob({ id: job!.id })).rejects.toThrow(/still finishing its cancelled attempt/);
  await db.query(`update mcsv_job.jobs set lease_owner = 'pool-dead-cancelled', lease_expires_at = now() - interval '1 second' where id = $1`, [job!.id]);
  await eventually(() => leaseOf(job!.id), (row) => row.lease_owner === null);
  expect((await env.jobs.getJobStatus({ id: job!.id })).job).toMatchObject({ state: JobState.CANCELLED, attempts: 1, errors: [] });
  // Now it can be retried, and runs again.
  hung.get("lease-cancelled")!.resolve();
  await env.jobs.retryJob({ id: job!.id });
  expect(await env.waitForState(job!.id, JobState.COMPLETED)).toMatchObject({ attempts: 2 });
});

test("a registered pool that stopped beating is declared dead and removed", async () => {
  await db.query(`insert into mcsv_job.workers (id, hostname, pid, heartbeat_at) values ('pool-silent', 'elsewhere', 1, now() - interval '1 minute')`);
  await eventually(async () => (await db.query(`select 1 from mcsv_job.workers where id = 'pool-silent'`)).rowCount, (n) => n === 0);
  // The service's own pool keeps beating.
  const { rows } = await db.query<{ fresh: boolean }>(`select heartbeat_at > now() - make_interval(secs => $1) as fresh from mcsv_job.workers`, [LEASE_MS / 1000]);
  expect(rows.length).toBeGreaterThan(0);
  expect(rows.every((r) => r.fresh)).toBe(true);
});

test("the lease must outlast missed beats", () => {
  const base = { DATABASE_URL: "postgres://x@localhost/x", ...serviceAuthEnv("job") };
  expect(() => loadJobConfig({ ...base, JOB_WORKER_HEARTBEAT_MS: "5000", JOB_WORKER_DEAD_AFTER_MS: "6000" })).toThrow(/at least twice JOB_WORKER_HEARTBEAT_MS/);
  expect(loadJobConfig(base)).toMatchObject({ JOB_WORKER_HEARTBEAT_MS: 5_000, JOB_WORKER_DEAD_AFTER_MS: 30_000 });
});
