/**
 * A job discarded because its last attempt's lease expired (its worker died on every attempt) runs no task code of
 * its own, so its task's follow-up (TaskDefinition.onDiscarded) is added in the transaction that records the
 * discard: for convert_image, a report_conversion_failed job that tells the gateway FAILED, so that the conversion
 * does not stay PROCESSING. Dead workers are faked as test/job/leases.test.ts does (the attempt's lease held by a
 * pool that stopped renewing it), with the earlier deaths in the job's counters.
 */
import pg from "pg";
import { Code, ConnectError } from "@connectrpc/connect";
import { context, propagation } from "@opentelemetry/api";
import { ConversionState, JobState, type Job } from "@mcsv/sdk";
import { JobLedger, MAX_GIVEN_BACK } from "../../services/job/ledger.js";
import { LeaseKeeper, type RecoveryReport } from "../../services/job/leases.js";
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

/** Only decode and onDiscarded of a definition are used by recovery: the callees are never called. */
const unused = () => Promise.reject(new Error("not called by recovery"));
const tasks = {
  convert_image: convertImageTask({ image: { convertImage: unused, convertDocument: () => { throw new Error("not called by recovery"); } }, user: { notifyImageConverted: unused }, store: { presignGet: unused }, convertTimeoutMs: 1, rpcTimeoutMs: 1, processingReportMs: 1 }),
};

/** A recoverer as another replica runs it (no pools of its own). */
const replica = () => new LeaseKeeper(db, new JobLedger(db), env.logger, { heartbeatMs: HEARTBEAT_MS, leaseMs: DEAD_AFTER_MS, tasks });

const inAnHour = () => ({ seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) });

interface Parked {
  id: string;
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
  return { id: job!.id };
}

/** An attempt starts in pool `poolId`, which dies at once: the lease it holds has expired, unrenewed. */
async function diesIn(job: Parked, poolId: string): Promise<void> {
  await db.query(
    `update mcsv_job.jobs
     set state = 'executing', attempts = attempts + 1, attempted_at = now(), lease_owner = $2, lease_expires_at = now() - interval '1 second'
     where id = $1`,
    [job.id, poolId],
  );
}

/** The job as if its earlier attempts had all died: MAX_GIVEN_BACK given back, and `counted` more counted. */
async function diedBefore(job: Parked, counted: number): Promise<void> {
  await db.query(`update mcsv_job.jobs set abandoned_attempts = $2, expired_leases = $3, attempts = $4 where id = $1`, [job.id, MAX_GIVEN_BACK, MAX_GIVEN_BACK + counted, counted]);
}

const leaseOwnerOf = async (job: Parked) => (await db.query<{ lease_owner: string | null }>(`select lease_owner from mcsv_job.jobs where id = $1`, [job.id])).rows[0]!.lease_owner;

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
  const mate = { id: email!.id };
  await diedBefore(mate, 0);
  const before = Number((await db.query<{ n: string }>(`select count(*) as n from mcsv_job.jobs`)).rows[0]!.n);

  // Its first MAX_GIVEN_BACK deaths were given back; the next uses its only attempt.
  await diedBefore(job, 0);
  const last = `pool-poison-${MAX_GIVEN_BACK + 1}`;
  await diesIn(job, last);
  await diesIn(mate, last);
  // The service's own recovery and two more replicas race for the expired leases.
  const rounds: RecoveryReport[] = await Promise.all([replica().recover(), replica().recover()]);

  const discarded = await env.waitForState(job.id, JobState.DISCARDED);
  expect(discarded.errors).toEqual([expect.objectContaining({ attempt: 1, error: expect.stringMatching(/abandoned: its lease expired \(worker pool-poison-4/) })]);
  expect(await leaseOwnerOf(job)).toBeNull();

  const [report, ...more] = await eventually(() => reportJobs("conv-poison"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(more).toEqual([]);
  expect(report).toMatchObject({ jobKey: jobKeys.conversionFailed("conv-poison"), attempts: 1 });
  const reports = failedReportsFor("conv-poison");
  expect(reports).toHaveLength(1);
  expect(reports[0]!.error).toBe(`the conversion was interrupted ${MAX_GIVEN_BACK + 1} times (its worker died or lost the job database each time); given up`);
  // The report continues the trace of the conversion's job.
  expect(env.stubs.traceparents.notifyImageConverted[env.stubs.calls.notifyImageConverted.indexOf(reports[0]!)]).toContain(traceId);
  // No task code of the conversion ran.
  expect(env.stubs.calls.convertImage).toEqual([]);
  expect(env.stubs.calls.notifyImageConverted).toHaveLength(1);

  // The send_email job is discarded as before, with no follow-up: the report is the only job added.
  expect((await env.waitForState(mate.id, JobState.DISCARDED)).errors.at(-1)!.error).toMatch(/lease expired/);
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

    // Every round fails (the service's every beat, and this one), so the job keeps its expired lease, executing.
    await eventually(
      () => replica().recover().then(() => "not recovered", (error: unknown) => String(error)),
      (outcome) => /refused by the test/.test(outcome),
    );
    expect(await leaseOwnerOf(job)).toBe("pool-atomic");
    expect((await env.jobs.getJobStatus({ id: job.id })).job!.state).toBe(JobState.EXECUTING);
    expect(await reportJobs("conv-atomic")).toEqual([]);

    await db.query(`update public.refuse_reports set on_ = false`);
    await env.waitForState(job.id, JobState.DISCARDED);
    const [report, ...more] = await eventually(() => reportJobs("conv-atomic"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
    expect(more).toEqual([]);
    expect(report!.args).toEqual({ conversionId: "conv-atomic", error: expect.stringMatching(/interrupted 5 times \(its worker died or lost the job database each time\); given up/) });
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

test("a redelivered convert_image's last attempt: a gateway that does not take the PROCESSING report is told FAILED by a report_conversion_failed job", async () => {
  let firstAttempt = true;
  env.stubs.methods.convertImage = () => {
    // The first attempt fails transiently; the second and last is a redelivery, which asks the gateway first.
    if (firstAttempt) {
      firstAttempt = false;
      throw new ConnectError("image service overloaded", Code.Unavailable);
    }
    return { pdfKey: "pdfs/conv-never-started.pdf" };
  };
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
    maxAttempts: 2,
  });
  await env.waitForState(job!.id, JobState.DISCARDED);
  await eventually(() => reportJobs("conv-never-started"), (jobs) => jobs[0]?.state === JobState.COMPLETED);
  expect(env.stubs.calls.convertImage).toHaveLength(1);
  const reports = failedReportsFor("conv-never-started");
  expect(reports).toHaveLength(1);
  expect(reports[0]!.error).toMatch(/could not start: the gateway did not take its progress report \(gateway restarting\)/);
});
