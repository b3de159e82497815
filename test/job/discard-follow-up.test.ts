/**
 * A job that crash recovery discards (its worker died on every attempt) runs no task code of its own, so its task's
 * follow-up (TaskDefinition.onDiscarded) is added in the transaction that records the discard: for convert_image, a
 * report_conversion_failed job that tells the gateway FAILED, so that the conversion does not stay PROCESSING. Dead
 * workers are simulated on the database as test/job/crash-recovery.test.ts does (graphile's lock by the dead pool's
 * id, one attempt taken), with the job due in an hour so that no live worker runs it between two deaths.
 */
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { context, propagation } from "@opentelemetry/api";
import { ConversionState, JobState, type Job } from "@mcsv/sdk";
import { CrashRecovery, MAX_GIVEN_BACK, type RecoveryReport } from "../../services/job/crash-recovery.js";
import { convertImageTask } from "../../services/job/tasks/convert_image.js";
import { jobKeys } from "../../services/shared/tasks.js";
import { eventually, propagateTraceContext, startJobTestEnv, type JobTestEnv } from "./support.js";

const HEARTBEAT_MS = 200;
const DEAD_AFTER_MS = 1_000;

let env: JobTestEnv;
let db: pg.Pool;

beforeAll(async () => {
  propagateTraceContext();
  env = await startJobTestEnv({ JOB_WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS), JOB_WORKER_DEAD_AFTER_MS: String(DEAD_AFTER_MS) });
  db = new pg.Pool({ connectionString: env.pg.url, max: 3, application_name: "discard-follow-up-test" });
  db.on("error", () => undefined);
});

afterAll(async () => {
  await db?.end();
  await env?.close();
  propagation.disable();
  context.disable();
});

beforeEach(() => env.stubs.reset());

/** Only decode and onDiscarded of a definition are used by crash recovery: the callees are never called. */
const unused = () => Promise.reject(new Error("not called by crash recovery"));
const tasks = {
  convert_image: convertImageTask({ image: { convertImage: unused }, user: { notifyImageConverted: unused }, store: { presignGet: unused }, convertTimeoutMs: 1, rpcTimeoutMs: 1 }),
};

/** A recoverer as another replica runs it (no pools of its own). */
const replica = () => new CrashRecovery(db, env.logger, { heartbeatMs: HEARTBEAT_MS, deadAfterMs: DEAD_AFTER_MS, tasks });

const inAnHour = () => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) });

interface Parked {
  id: string;
  graphileId: string;
}

async function graphileIdOf(id: string): Promise<string> {
  return (await db.query<{ graphile_job_id: string }>(`select graphile_job_id from mcsv_job.jobs where id = $1`, [id])).rows[0]!.graphile_job_id;
}

/** A convert_image job, enqueued inside trace `traceId`, that no live worker takes on its own (due in an hour). */
async function parkedConversion(conversionId: string, maxAttempts: number, traceId: string): Promise<Parked> {
  const { job } = await env.jobs.enqueueJob(
    {
      task: "convert_image",
      args: {
        request: { conversionId, inputFormat: "png" },
        objectKey: `originals/${conversionId}`,
      },
      jobKey: jobKeys.convertImage(conversionId),
      runAt: inAnHour(),
      maxAttempts,
    },
    { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
  );
  return { id: job!.id, graphileId: await graphileIdOf(job!.id) };
}

/**
 * What graphile and the task wrapper leave when pool `poolId` (registered, silent for a minute, unless told
 * otherwise) took the job and died mid-attempt; the job stays due in an hour, so that after its release no live
 * worker runs it.
 */
async function diesIn(job: Parked, poolId: string, { registered = true } = {}): Promise<void> {
  if (registered) await db.query(`insert into mcsv_job.workers (id, hostname, pid, heartbeat_at) values ($1, 'elsewhere', 1, now() - interval '1 minute') on conflict (id) do nothing`, [poolId]);
  await db.query(
    `update graphile_worker._private_jobs
     set attempts = attempts + 1, locked_by = $2, locked_at = now(), run_at = greatest(run_at, now() + interval '1 hour')
     where id = $1`,
    [job.graphileId, poolId],
  );
  await db.query(
    `update mcsv_job.jobs l set attempts = l.attempt_offset + g.attempts, attempted_at = now()
     from graphile_worker._private_jobs g where g.id = l.graphile_job_id and l.id = $1`,
    [job.id],
  );
}

/** The job as if its earlier attempts had all died: MAX_GIVEN_BACK given back, and `counted` more counted. */
async function diedBefore(job: Parked, counted: number): Promise<void> {
  await db.query(`update mcsv_job.jobs set abandoned_attempts = $2 where id = $1`, [job.id, MAX_GIVEN_BACK]);
  await db.query(`update graphile_worker._private_jobs set attempts = $2 where id = $1`, [job.graphileId, counted]);
}

const lockOf = async (graphileId: string) => (await db.query<{ locked_by: string | null }>(`select locked_by from graphile_worker._private_jobs where id = $1`, [graphileId])).rows[0];

const failedReportsFor = (conversionId: string) => env.stubs.calls.notifyImageConverted.filter((r) => r.conversionId === conversionId && r.state === ConversionState.FAILED);

/** The ledger's report_conversion_failed jobs of `conversionId`. */
async function reportJobs(conversionId: string): Promise<Job[]> {
  const { jobs } = await env.jobs.listJobs({ task: "report_conversion_failed", pageSize: 100 });
  return jobs.filter((j) => j.args?.["conversionId"] === conversionId);
}

test("a convert_image job whose worker dies on every attempt ends with one FAILED report to the gateway, in its trace, however many recoverers race", async () => {
  const traceId = "5bf92f3577b34da6a3ce929d0e0e4736";
  const job = await parkedConversion("conv-poison", 1, traceId);
  // A send_email job of the same dead worker, at its last attempt too: its task declares no follow-up.
  const { job: email } = await env.jobs.enqueueJob({
    task: "send_email",
    args: { request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: "poison-mate" } },
    runAt: inAnHour(),
    maxAttempts: 1,
  });
  const mate = { id: email!.id, graphileId: await graphileIdOf(email!.id) };
  await diedBefore(mate, 0);
  const before = Number((await db.query<{ n: string }>(`select count(*) as n from mcsv_job.jobs`)).rows[0]!.n);

  // Its first MAX_GIVEN_BACK deaths are given back; the next uses its only attempt.
  for (let death = 1; death <= MAX_GIVEN_BACK; death++) {
    await diesIn(job, `pool-poison-${death}`);
    await eventually(() => lockOf(job.graphileId), (row) => row?.locked_by === null);
    expect((await env.jobs.getJobStatus({ id: job.id })).job!.state).not.toBe(JobState.DISCARDED);
  }
  const last = `pool-poison-${MAX_GIVEN_BACK + 1}`;
  await diesIn(job, last);
  await diesIn(mate, last);
  // The service's own recovery and two more replicas race for the dead worker.
  const rounds: RecoveryReport[] = await Promise.all([replica().recover(), replica().recover()]);

  const discarded = await env.waitForState(job.id, JobState.DISCARDED);
  expect(discarded.errors).toHaveLength(MAX_GIVEN_BACK + 1);
  expect(discarded.errors.at(-1)!.error).toMatch(/abandoned.*no attempts left/);
  expect(await lockOf(job.graphileId)).toBeUndefined();

  const [report, ...more] = await eventually(() => reportJobs("conv-poison"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(more).toEqual([]);
  expect(report).toMatchObject({ jobKey: jobKeys.conversionFailed("conv-poison"), attempts: 1 });
  const reports = failedReportsFor("conv-poison");
  expect(reports).toHaveLength(1);
  expect(reports[0]!.error).toBe(`the conversion was interrupted ${MAX_GIVEN_BACK + 1} times (its worker died each time); given up`);
  // The report continues the trace of the conversion's job.
  expect(env.stubs.traceparents.notifyImageConverted[env.stubs.calls.notifyImageConverted.indexOf(reports[0]!)]).toContain(traceId);
  // No task code of the conversion ran.
  expect(env.stubs.calls.convertImage).toEqual([]);
  expect(env.stubs.calls.notifyImageConverted).toHaveLength(1);

  // The send_email job is discarded as before, with no follow-up: the report is the only job added.
  expect((await env.waitForState(mate.id, JobState.DISCARDED)).errors.at(-1)!.error).toMatch(/no attempts left/);
  expect(Number((await db.query<{ n: string }>(`select count(*) as n from mcsv_job.jobs`)).rows[0]!.n)).toBe(before + 1);
  // At most one of the racing replicas added it (or the service's recovery did); recovering again adds nothing.
  expect(rounds.flatMap((r) => r.followUps).length).toBeLessThanOrEqual(1);
  expect((await replica().recover()).followUps).toEqual([]);
  expect(await reportJobs("conv-poison")).toHaveLength(1);
  expect(failedReportsFor("conv-poison")).toHaveLength(1);
});

test("the discard and its follow-up commit together: a round that cannot add the report discards nothing, the next one does both", async () => {
  await db.query(`create table public.refuse_reports (on_ boolean)`);
  await db.query(`insert into public.refuse_reports values (true)`);
  await db.query(`
    create function public.refuse_report() returns trigger language plpgsql as $$
    begin
      if new.task = 'report_conversion_failed' and exists (select 1 from public.refuse_reports where on_) then
        raise exception 'refused by the test';
      end if;
      return new;
    end $$`);
  await db.query(`create trigger refuse_report before insert on mcsv_job.jobs for each row execute function public.refuse_report()`);
  try {
    const job = await parkedConversion("conv-atomic", 2, "6bf92f3577b34da6a3ce929d0e0e4736");
    await diedBefore(job, 1);
    await diesIn(job, "pool-atomic");

    // Every round fails (the service's every beat, and this one's once it has the recovery lock), so the job stays
    // locked by the dead worker, pending.
    await eventually(
      () => replica().recover().then(() => "not recovered", (error: unknown) => String(error)),
      (outcome) => /refused by the test/.test(outcome),
    );
    expect(await lockOf(job.graphileId)).toEqual({ locked_by: "pool-atomic" });
    expect((await env.jobs.getJobStatus({ id: job.id })).job!.state).toBe(JobState.EXECUTING);
    expect(await reportJobs("conv-atomic")).toEqual([]);

    await db.query(`update public.refuse_reports set on_ = false`);
    await env.waitForState(job.id, JobState.DISCARDED);
    const [report, ...more] = await eventually(() => reportJobs("conv-atomic"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
    expect(more).toEqual([]);
    expect(report!.args).toEqual({ conversionId: "conv-atomic", error: expect.stringMatching(/interrupted 1 time in 5 attempts .*given up/) });
    expect(failedReportsFor("conv-atomic")).toHaveLength(1);
  } finally {
    await db.query(`drop trigger if exists refuse_report on mcsv_job.jobs`);
    await db.query(`drop function if exists public.refuse_report()`);
    await db.query(`drop table if exists public.refuse_reports`);
  }
});

test("a report the gateway does not take at first is retried, and arrives once", async () => {
  let refused = 0;
  env.stubs.methods.notifyImageConverted = (req) => {
    if (req.conversionId === "conv-gateway-away" && refused++ === 0) throw new ConnectError("gateway restarting", Code.Unavailable);
    return {};
  };
  const job = await parkedConversion("conv-gateway-away", 1, "7bf92f3577b34da6a3ce929d0e0e4736");
  await diedBefore(job, 0);
  await diesIn(job, "pool-gateway-away");

  await env.waitForState(job.id, JobState.DISCARDED);
  const [report] = await eventually(() => reportJobs("conv-gateway-away"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(report!.attempts).toBe(2);
  expect(report!.errors).toEqual([expect.objectContaining({ attempt: 1, error: expect.stringContaining("gateway restarting") })]);
  // Two calls, the first refused: the gateway recorded FAILED once.
  expect(failedReportsFor("conv-gateway-away")).toHaveLength(2);
  expect(refused).toBe(2);
});

test("a convert_image job whose end was not recorded on its last attempt (Postgres away) is reported FAILED by its own process", async () => {
  const recovery = new CrashRecovery(db, env.logger, { heartbeatMs: HEARTBEAT_MS, deadAfterMs: DEAD_AFTER_MS, tasks });
  recovery.register("pool-self-convert");
  const beating = setInterval(() => void db.query(`update mcsv_job.workers set heartbeat_at = now() where id = 'pool-self-convert'`).catch(() => undefined), 100);
  try {
    const job = await parkedConversion("conv-stranded", 1, "8bf92f3577b34da6a3ce929d0e0e4736");
    // Its attempt ran here, to its end; only graphile's record of that was lost.
    await db.query(`insert into mcsv_job.workers (id, hostname, pid) values ('pool-self-convert', 'here', 1) on conflict (id) do update set heartbeat_at = now()`);
    await diesIn(job, "pool-self-convert", { registered: false });
    recovery.jobEnded({ id: job.graphileId, attempts: 1 });
    await new Promise((r) => setTimeout(r, DEAD_AFTER_MS + 100));

    const released = await recovery.releaseStranded();
    expect(released.discarded).toEqual([job.id]);
    expect(released.followUps).toEqual([expect.objectContaining({ discardedJobId: job.id, task: "report_conversion_failed", duplicate: false })]);
    await env.waitForState(job.id, JobState.DISCARDED);
    await eventually(() => reportJobs("conv-stranded"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
    const reports = failedReportsFor("conv-stranded");
    expect(reports).toHaveLength(1);
    expect(reports[0]!.error).toMatch(/outcome was lost.*given up/);
  } finally {
    clearInterval(beating);
    await recovery.stop();
  }
});

test("convert_image's last attempt: a FAILED report the gateway does not take is left to a report_conversion_failed job", async () => {
  let refused = 0;
  env.stubs.methods.convertImage = () => {
    throw new ConnectError("image service overloaded", Code.ResourceExhausted);
  };
  env.stubs.methods.notifyImageConverted = (req) => {
    if (req.state === ConversionState.FAILED && refused++ === 0) throw new ConnectError("gateway restarting", Code.Unavailable);
    return {};
  };
  const { job } = await env.jobs.enqueueJob({
    task: "convert_image",
    args: {
      request: { conversionId: "conv-last-away", inputFormat: "png" },
      objectKey: "originals/conv-last-away",
    },
    maxAttempts: 1,
  });
  // The conversion's job ends with its own error, not the report's.
  const discarded = await env.waitForState(job!.id, JobState.DISCARDED);
  expect(discarded.errors).toEqual([expect.objectContaining({ error: expect.stringContaining("image service overloaded") })]);
  await eventually(() => reportJobs("conv-last-away"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(failedReportsFor("conv-last-away").map((r) => r.error)).toEqual(["image service overloaded", "image service overloaded"]);
});

test("convert_image's last attempt: a gateway that does not take the PROCESSING report is told FAILED by a report_conversion_failed job", async () => {
  env.stubs.methods.notifyImageConverted = (req) => {
    if (req.state === ConversionState.PROCESSING) throw new ConnectError("gateway restarting", Code.Unavailable);
    return {};
  };
  const { job } = await env.jobs.enqueueJob({
    task: "convert_image",
    args: {
      request: { conversionId: "conv-never-started", inputFormat: "png" },
      objectKey: "originals/conv-never-started",
    },
    maxAttempts: 1,
  });
  await env.waitForState(job!.id, JobState.DISCARDED);
  await eventually(() => reportJobs("conv-never-started"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(env.stubs.calls.convertImage).toEqual([]);
  const reports = failedReportsFor("conv-never-started");
  expect(reports).toHaveLength(1);
  expect(reports[0]!.error).toMatch(/could not start: the gateway did not take its progress report \(gateway restarting\)/);
});
