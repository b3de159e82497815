/**
 * The ledger stays right when the process does not end cleanly, and shutdown is graceful: a job its crashes
 * discarded, jobs that graphile got without a ticket (the crontab, and jobs queued before the ledger owned job
 * state), a drain that finishes what is in flight and releases what is not, without using up an attempt, and a
 * dispatch whose claim meets a Postgres outage.
 */
import pg from "pg";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { JobService, JobState } from "@mcsv/sdk";
import type { JobHelpers } from "graphile-worker";
import { wrapTask } from "../../services/job/execution.js";
import { JobLedger } from "../../services/job/ledger.js";
import { startJobService } from "../../services/job/service.js";
import { deferred, eventually, startJobTestEnv, type JobTestEnv } from "./support.js";
import { internalAuth } from "../support/credentials.js";

let env: JobTestEnv;
let db: pg.Pool;

beforeAll(async () => {
  // A short grace period: running tasks are asked to give up after 1 s, and are released after 2.5 s. A short RPC
  // deadline, because Connect keeps the deadline timer of an aborted call alive, which would hold jest's exit.
  env = await startJobTestEnv({ SHUTDOWN_GRACE_MS: "2500", RPC_TIMEOUT_MS: "4000" });
  db = new pg.Pool({ connectionString: env.pg.url, max: 2, application_name: "recovery-test" });
  // pg-pool's end() resolves before its sockets are closed; Postgres stopping right after must not crash the test.
  db.on("error", () => undefined);
});

afterAll(async () => {
  await db?.end();
  await env?.close();
});

beforeEach(() => env.stubs.reset());

function welcome(key: string) {
  return { request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: key } };
}

const sendsFor = (key: string) => env.stubs.calls.sendEmail.filter((r) => r.idempotencyKey === key).length;

test("a job whose attempts all ended in crashes shows as discarded, and RetryJob runs it again", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("crash-exhausted"), maxAttempts: 3, runAt: { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) } });
  // What the ledger holds once every attempt's lease expired: attempts used up, discarded.
  await db.query(`update mcsv_job.jobs set state = 'discarded', attempts = 3, discarded_at = now() where id = $1`, [job!.id]);
  const discarded = (await env.jobs.getJobStatus({ id: job!.id })).job!;
  expect(discarded).toMatchObject({ state: JobState.DISCARDED, attempts: 3, maxAttempts: 3 });
  expect(discarded.discardedAt).toBeDefined();

  await env.jobs.retryJob({ id: job!.id });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(done).toMatchObject({ attempts: 4, maxAttempts: 4 });
  expect(sendsFor("crash-exhausted")).toBe(1);
});

test("a job queued before the ledger owned job state (its graphile job carries the arguments) runs once", async () => {
  const args = { ...welcome("legacy-dispatch"), _trace: { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" } };
  const { rows } = await db.query<{ id: string }>(
    `with g as (select (graphile_worker.add_job('send_email', $1::json)).id as id)
     insert into mcsv_job.jobs (task, args, max_attempts, graphile_job_id) select 'send_email', $2, 5, g.id from g returning id`,
    [JSON.stringify(args), JSON.stringify(welcome("legacy-dispatch"))],
  );
  const done = await env.waitForState(rows[0]!.id, JobState.COMPLETED);
  expect(done).toMatchObject({ attempts: 1, errors: [] });
  expect(sendsFor("legacy-dispatch")).toBe(1);
});

test("a job added to graphile directly (as the crontab does) gets its ledger row when it runs", async () => {
  const emailSent = { userEmail: "ada@example.com", emailType: "EMAIL_TYPE_WELCOME", success: true };
  await db.query(`select graphile_worker.add_job('notify_client', $1::json, max_attempts => 4)`, [JSON.stringify({ emailSent, _cron: { ts: new Date().toISOString(), backfilled: false } })]);
  const adopted = async () => (await env.jobs.listJobs({ task: "notify_client", states: [JobState.COMPLETED], pageSize: 100 })).jobs.find((j) => j.maxAttempts === 4);
  const job = await eventually(adopted, (j) => j !== undefined);
  // The reserved _cron key is graphile's, not an argument.
  expect(job).toMatchObject({ task: "notify_client", attempts: 1, args: { emailSent }, jobKey: "" });
  expect(env.stubs.calls.notifyEmailSent.filter((r) => r.emailId === "")).toHaveLength(1);
});

test("a dispatch whose claim meets a Postgres outage waits for Postgres and then runs; on a shutdown it gives up", async () => {
  // Due in an hour, so that graphile leaves the dispatch alone: the test hands its ticket to the task wrapper, as
  // graphile would, at a moment when Postgres is down.
  const inAnHour = { seconds: BigInt(Math.floor(Date.now() / 1000) + 3600) };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("claim-outage"), runAt: inAnHour });
  const ticket = { job: job!.id, dispatch: 1 };
  const ran: unknown[] = [];
  const task = wrapTask(
    "send_email",
    { decode: (args) => ({ ok: true, payload: args }), run: async (payload) => void ran.push(payload) },
    {
      ledger: new JobLedger(db),
      leases: { leaseSeconds: 5, hold: () => ({ signal: new AbortController().signal, release: () => undefined }) },
      logger: env.logger,
      enqueue: () => Promise.reject(new Error("no follow-ups here")),
    },
  );
  const helpers = (abortSignal: AbortSignal) => ({ job: { id: "0", locked_by: "claim-outage-test" }, abortSignal }) as unknown as JobHelpers;

  const shutdown = new AbortController();
  let waiting: Promise<string> | undefined;
  let givenUp: Promise<string> | undefined;
  let ranDuringOutage = -1;
  await env.pg.restart(async () => {
    waiting = Promise.resolve(task(ticket, helpers(new AbortController().signal))).then(() => "returned", (error: unknown) => `threw ${String(error)}`);
    givenUp = Promise.resolve(task(ticket, helpers(shutdown.signal))).then(() => "returned", (error: unknown) => `threw ${String(error)}`);
    await new Promise((r) => setTimeout(r, 1_000));
    shutdown.abort();
    ranDuringOutage = ran.length;
  });

  // The shutdown ends the wait with the connection error: graphile then keeps the dispatch for a later run.
  expect(await givenUp).toMatch(/^threw .*ECONNREFUSED/);
  expect(ranDuringOutage).toBe(0);
  // The other one claimed once Postgres was back, ran, and recorded its outcome.
  expect(await waiting).toBe("returned");
  expect(ran).toEqual([welcome("claim-outage")]);
  const { rows } = await db.query<{ state: string; attempts: number }>(`select state, attempts from mcsv_job.jobs where id = $1`, [job!.id]);
  expect(rows[0]).toEqual({ state: "completed", attempts: 1 });
}, 60_000);

test("shutdown finishes a job in flight, releases one that does not finish without using an attempt, and it runs after a restart", async () => {
  const finishing = deferred();
  let hangs = true;
  env.stubs.methods.sendEmail = async (req) => {
    if (req.idempotencyKey === "drain-finish") await finishing.promise;
    if (req.idempotencyKey === "drain-hang" && hangs) {
      hangs = false;
      await new Promise(() => undefined); // never answers; the job service gives up when its abort signal fires
    }
    return { success: true, message: "sent", emailId: `email-${req.idempotencyKey}` };
  };
  const finish = (await env.jobs.enqueueJob({ task: "send_email", args: welcome("drain-finish") })).job!;
  const hang = (await env.jobs.enqueueJob({ task: "send_email", args: welcome("drain-hang") })).job!;
  await env.waitForState(finish.id, JobState.EXECUTING);
  await env.waitForState(hang.id, JobState.EXECUTING);

  const stopped = env.service.shutdown("test");
  setTimeout(() => finishing.resolve(), 200);
  await stopped;

  const ledger = async (id: string) => (await db.query<{ state: string; attempts: number; dispatch: number; lease_owner: string | null; errors: { error: string }[] }>(
      `select state, attempts, dispatch, lease_owner, errors from mcsv_job.jobs where id = $1`,
      [id],
    )).rows[0]!;
  expect(await ledger(finish.id)).toMatchObject({ state: "completed", attempts: 1 });
  const released = await ledger(hang.id);
  // Given back and dispatched again: the attempt does not count.
  expect(released).toMatchObject({ state: "queued", attempts: 0, dispatch: 2, lease_owner: null });
  expect(released.errors[0]!.error).toContain("interrupted by shutdown");

  const restarted = await startJobService(env.config, { logger: env.logger });
  try {
    const jobs = createClient(JobService, createConnectTransport({ baseUrl: restarted.url, httpVersion: "1.1", interceptors: [internalAuth] }));
    const done = await eventually(
      () => jobs.getJobStatus({ id: hang.id }),
      (r) => r.job!.state === JobState.COMPLETED,
    );
    expect(done.job!.attempts).toBe(1);
    expect(sendsFor("drain-hang")).toBe(2);
    expect(sendsFor("drain-finish")).toBe(1);
  } finally {
    await restarted.shutdown("test over");
  }
});
