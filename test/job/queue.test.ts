/**
 * JobService against the real queue (graphile-worker on an embedded Postgres): enqueue checks, the life cycle of a
 * job through the ledger (available, executing, completed, scheduled, retryable, discarded, cancelled), retries,
 * job keys, listing, queue stats and metrics. Stand-in services answer the tasks' calls as each test scripts.
 */
import { timestampFromDate, timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { JobState, type Job } from "@mcsv/sdk";
import { context, propagation } from "@opentelemetry/api";
import { deferred, fieldsOf, propagateTraceContext, type JobTestEnv, rejection, startJobTestEnv, eventually } from "./support.js";

let env: JobTestEnv;

beforeAll(async () => {
  env = await startJobTestEnv();
});

afterAll(async () => {
  await env?.close();
});

beforeEach(() => env.stubs.reset());

/** send_email arguments: a welcome email whose idempotency key makes its calls countable. */
function welcome(key: string) {
  return { request: { userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_WELCOME", idempotencyKey: key } };
}

function sendsFor(key: string): number {
  return env.stubs.calls.sendEmail.filter((r) => r.idempotencyKey === key).length;
}

const inOneHour = () => timestampFromDate(new Date(Date.now() + 3_600_000));

test("EnqueueJob refuses an unknown task and bad arguments, naming every bad field", async () => {
  const unknown = await rejection(env.jobs.enqueueJob({ task: "mine_bitcoin", args: {} }));
  expect(unknown.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(unknown)).toEqual(["task"]);

  const bad = await rejection(
    env.jobs.enqueueJob({
      task: "send_email",
      args: { request: { userEmail: "ada@example.com", emailType: "EMAIL_TYPE_BOGUS" } },
      maxAttempts: 26,
      jobKey: "k".repeat(201),
      queue: "q".repeat(129),
    }),
  );
  expect(bad.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(bad).sort()).toEqual(["args.request", "jobKey", "maxAttempts", "queue"]);

  const convert = await rejection(env.jobs.enqueueJob({ task: "convert_image", args: { request: {} } }));
  expect(fieldsOf(convert).sort()).toEqual(["args.objectKey"]);

  const neither = await rejection(env.jobs.enqueueJob({ task: "notify_client", args: {} }));
  expect(fieldsOf(neither)).toEqual(["args"]);
  expect(neither.rawMessage).toContain("exactly one of pdfReady and emailSent");
});

test("EnqueueJobs adds every job in one call, each continuing its own trace, with job keys as EnqueueJob has them", async () => {
  propagateTraceContext();
  const before = await env.jobs.enqueueJob({ task: "send_email", args: welcome("batch-known"), jobKey: "batch:known" });
  const traceOf = (n: number) => ({ traceparent: `00-${String(n).repeat(32)}-00f067aa0ba902b7-01` });
  const { results } = await env.jobs.enqueueJobs({
    jobs: [
      { task: "send_email", args: welcome("batch-1"), jobKey: "batch:1", traceContext: traceOf(1) },
      { task: "send_email", args: welcome("batch-known"), jobKey: "batch:known" },
      { task: "send_email", args: welcome("batch-2"), traceContext: traceOf(2) },
    ],
  });
  expect(results.map((r) => r.duplicate)).toEqual([false, true, false]);
  expect(results[1]!.job!.id).toBe(before.job!.id);
  expect(results.map((r) => r.job!.jobKey)).toEqual(["batch:1", "batch:known", ""]);
  for (const r of results) await env.waitForState(r.job!.id, JobState.COMPLETED);
  expect([sendsFor("batch-1"), sendsFor("batch-2"), sendsFor("batch-known")]).toEqual([1, 1, 1]);
  // Each attempt continued the trace its job named.
  const traceparents = (key: string) => env.stubs.traceparents.sendEmail.filter((_, i) => env.stubs.calls.sendEmail[i]!.idempotencyKey === key);
  expect(traceparents("batch-1")[0]).toContain("1".repeat(32));
  expect(traceparents("batch-2")[0]).toContain("2".repeat(32));
  propagation.disable();
  context.disable();
});

test("EnqueueJobs adds nothing when any job is invalid, naming each bad field by its job", async () => {
  const before = (await env.jobs.listJobs({ pageSize: 1 })).jobs[0]?.id;
  const refused = await rejection(
    env.jobs.enqueueJobs({
      jobs: [
        { task: "send_email", args: welcome("batch-never"), jobKey: "batch:never" },
        { task: "mine_bitcoin", args: {} },
        { task: "send_email", args: welcome("batch-never-2"), maxAttempts: 26 },
      ],
    }),
  );
  expect(refused.code).toBe(Code.InvalidArgument);
  expect(fieldsOf(refused).sort()).toEqual(["jobs[1].task", "jobs[2].maxAttempts"]);
  expect(fieldsOf(await rejection(env.jobs.enqueueJobs({ jobs: [] })))).toEqual(["jobs"]);
  expect((await env.jobs.listJobs({ pageSize: 1 })).jobs[0]?.id).toBe(before);
  expect(sendsFor("batch-never")).toBe(0);
});

test("GetJobStatus: invalid_argument for a malformed id, not_found for an unknown one", async () => {
  expect((await rejection(env.jobs.getJobStatus({ id: "abc" }))).code).toBe(Code.InvalidArgument);
  expect((await rejection(env.jobs.getJobStatus({ id: "" }))).code).toBe(Code.InvalidArgument);
  expect((await rejection(env.jobs.getJobStatus({ id: "99999999999999999999" }))).code).toBe(Code.InvalidArgument);
  expect((await rejection(env.jobs.getJobStatus({ id: "987654321" }))).code).toBe(Code.NotFound);
});

test("a job goes available → executing → completed; jobs of one named queue run one at a time", async () => {
  const gate = deferred();
  env.stubs.methods.sendEmail = async (req) => {
    if (req.idempotencyKey === "life-1") await gate.promise;
    return { success: true, message: "sent", emailId: `email-${req.idempotencyKey}` };
  };
  const first = (await env.jobs.enqueueJob({ task: "send_email", queue: "life", args: welcome("life-1") })).job!;
  const second = (await env.jobs.enqueueJob({ task: "send_email", queue: "life", args: welcome("life-2") })).job!;
  expect(first).toMatchObject({ task: "send_email", queue: "life", attempts: 0, maxAttempts: 10 });
  expect(first.args).toEqual(welcome("life-1"));

  const executing = await env.waitForState(first.id, JobState.EXECUTING);
  expect(executing.attempts).toBe(1);
  // The attempt began after the job was enqueued, and no later than now.
  expect(timestampDate(executing.attemptedAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(first.insertedAt!).getTime());
  expect(timestampDate(executing.attemptedAt!).getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
  // The queue is held by the first job: the second waits, ready to run.
  expect((await env.jobs.getJobStatus({ id: second.id })).job!.state).toBe(JobState.AVAILABLE);

  gate.resolve();
  const done = await env.waitForState(first.id, JobState.COMPLETED);
  expect(done.attempts).toBe(1);
  expect(done.errors).toEqual([]);
  expect(timestampDate(done.completedAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(done.attemptedAt!).getTime());
  await env.waitForState(second.id, JobState.COMPLETED);
  expect(sendsFor("life-1")).toBe(1);
  expect(sendsFor("life-2")).toBe(1);
});

test("a job with run_at in the future is scheduled; CancelJob cancels it and it never runs", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("sched-1"), runAt: inOneHour() });
  expect(job!.state).toBe(JobState.SCHEDULED);
  expect(timestampDate(job!.runAt!).getTime()).toBeGreaterThan(Date.now() + 3_000_000);

  const cancelled = (await env.jobs.cancelJob({ id: job!.id })).job!;
  expect(cancelled.state).toBe(JobState.CANCELLED);
  expect(timestampDate(cancelled.cancelledAt!).getTime()).toBeGreaterThanOrEqual(timestampDate(job!.insertedAt!).getTime());
  expect(timestampDate(cancelled.cancelledAt!).getTime()).toBeLessThanOrEqual(Date.now() + 1_000);
  // Terminal: cancelling again, or retrying a completed job, is a failed precondition.
  expect((await rejection(env.jobs.cancelJob({ id: job!.id }))).code).toBe(Code.FailedPrecondition);
  expect((await rejection(env.jobs.cancelJob({ id: "987654321" }))).code).toBe(Code.NotFound);
});

test("CancelJob takes an available job out of the queue before it runs", async () => {
  const gate = deferred();
  env.stubs.methods.sendEmail = async (req) => {
    if (req.idempotencyKey === "cancel-1") await gate.promise;
    return { success: true, message: "sent", emailId: "e" };
  };
  const blocker = (await env.jobs.enqueueJob({ task: "send_email", queue: "cancel", args: welcome("cancel-1") })).job!;
  const waiting = (await env.jobs.enqueueJob({ task: "send_email", queue: "cancel", args: welcome("cancel-2") })).job!;
  await env.waitForState(blocker.id, JobState.EXECUTING);
  expect((await env.jobs.getJobStatus({ id: waiting.id })).job!.state).toBe(JobState.AVAILABLE);

  expect((await env.jobs.cancelJob({ id: waiting.id })).job!.state).toBe(JobState.CANCELLED);
  gate.resolve();
  await env.waitForState(blocker.id, JobState.COMPLETED);
  // A later job of the same queue runs, so the cancelled one would have run by now had it stayed queued.
  const later = (await env.jobs.enqueueJob({ task: "send_email", queue: "cancel", args: welcome("cancel-3") })).job!;
  await env.waitForState(later.id, JobState.COMPLETED);
  expect(sendsFor("cancel-2")).toBe(0);
  expect((await env.jobs.getJobStatus({ id: waiting.id })).job!.state).toBe(JobState.CANCELLED);
});

test("CancelJob on an executing job lets the attempt finish but never retries it", async () => {
  const gate = deferred();
  env.stubs.methods.sendEmail = async () => {
    await gate.promise;
    throw new ConnectError("mail relay down", Code.Unavailable);
  };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("cancel-exec") });
  await env.waitForState(job!.id, JobState.EXECUTING);
  expect((await env.jobs.cancelJob({ id: job!.id })).job!.state).toBe(JobState.CANCELLED);
  // RetryJob refuses while the cancelled attempt is still running.
  expect((await rejection(env.jobs.retryJob({ id: job!.id }))).code).toBe(Code.FailedPrecondition);
  gate.resolve();
  const after = await eventually(
    () => env.jobs.getJobStatus({ id: job!.id }),
    (r) => r.job!.errors.length === 1,
  );
  expect(after.job!.state).toBe(JobState.CANCELLED);
  expect(after.job!.errors[0]!.error).toContain("mail relay down");
  expect(sendsFor("cancel-exec")).toBe(1);
});

test("a transient failure makes the job retryable with its error recorded; RetryJob runs it now", async () => {
  let failing = true;
  env.stubs.methods.sendEmail = () => {
    if (failing) throw new ConnectError("mail relay down", Code.Unavailable);
    return { success: true, message: "sent", emailId: "e-1" };
  };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("retry-1") });
  const retryable = await env.waitForState(job!.id, JobState.RETRYABLE);
  expect(retryable.attempts).toBeGreaterThanOrEqual(1);
  expect(retryable.errors).toHaveLength(retryable.attempts);
  expect(retryable.errors[0]).toMatchObject({ attempt: 1 });
  expect(retryable.errors[0]!.error).toContain("mail relay down");
  // The ledger's back-off: the next attempt e^1 s after the failure was recorded (both written in one statement).
  const backoffMs = timestampDate(retryable.runAt!).getTime() - timestampDate(retryable.errors[0]!.at!).getTime();
  expect(Math.abs(backoffMs - Math.exp(1) * 1000)).toBeLessThan(2);

  failing = false;
  await env.jobs.retryJob({ id: job!.id });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(done.attempts).toBe(done.errors.length + 1);
});

test("out of attempts the job is discarded with every error; RetryJob gives it one more attempt", async () => {
  let failing = true;
  env.stubs.methods.sendEmail = () => {
    if (failing) throw new ConnectError("mail relay down", Code.Unavailable);
    return { success: true, message: "sent", emailId: "e-2" };
  };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("discard-1"), maxAttempts: 2 });
  expect(job!.maxAttempts).toBe(2);
  await env.waitForState(job!.id, JobState.RETRYABLE);
  await env.jobs.retryJob({ id: job!.id }).catch(() => undefined); // it may have started again by itself
  const discarded = await env.waitForState(job!.id, JobState.DISCARDED);
  expect(discarded.attempts).toBe(2);
  expect(discarded.errors.map((e) => e.attempt)).toEqual([1, 2]);
  // Discarded when the last attempt's error was recorded: the same instant.
  expect(timestampDate(discarded.discardedAt!).getTime()).toBe(timestampDate(discarded.errors[1]!.at!).getTime());
  expect(sendsFor("discard-1")).toBe(2);
  // The client hears that the email failed for good.
  const failedNotice = await eventually(
    () => env.jobs.listJobs({ task: "notify_client", pageSize: 100 }),
    (r) => r.jobs.some((j) => j.jobKey === "notify_client:email_sent:discard-1:failed"),
  );
  const notice = failedNotice.jobs.find((j) => j.jobKey === "notify_client:email_sent:discard-1:failed")!.args as { emailSent: Record<string, unknown> };
  expect(notice.emailSent).toMatchObject({ message: "mail relay down", userEmail: "ada@example.com" });
  expect(notice.emailSent["success"]).toBeUndefined(); // false, which proto3 JSON leaves out

  failing = false;
  const retried = (await env.jobs.retryJob({ id: job!.id })).job!;
  expect([JobState.AVAILABLE, JobState.EXECUTING, JobState.COMPLETED]).toContain(retried.state);
  expect(retried.maxAttempts).toBe(3);
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(done.attempts).toBe(3);
  expect(done.errors).toHaveLength(2);
  // Completed jobs cannot be retried.
  expect((await rejection(env.jobs.retryJob({ id: job!.id }))).code).toBe(Code.FailedPrecondition);
});

test("a permanent error from the callee discards the job at once, after one attempt", async () => {
  env.stubs.methods.sendEmail = () => {
    throw new ConnectError("user_email: not an address", Code.InvalidArgument);
  };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args: welcome("perm-1") });
  const discarded = await env.waitForState(job!.id, JobState.DISCARDED);
  expect(discarded.attempts).toBe(1);
  expect(discarded.maxAttempts).toBe(10);
  expect(discarded.errors).toHaveLength(1);
  expect(discarded.errors[0]!.error).toContain("not an address");
  expect(sendsFor("perm-1")).toBe(1);
});

test("a job key gives one job and one run, however often and whenever it is enqueued again", async () => {
  const args = welcome("key-1");
  const [a, b] = await Promise.all([
    env.jobs.enqueueJob({ task: "send_email", args, jobKey: "send_email:welcome:key-1" }),
    env.jobs.enqueueJob({ task: "send_email", args, jobKey: "send_email:welcome:key-1" }),
  ]);
  expect(a.job!.id).toBe(b.job!.id);
  expect([a.duplicate, b.duplicate].sort()).toEqual([false, true]);
  expect(a.job!.jobKey).toBe("send_email:welcome:key-1");
  await env.waitForState(a.job!.id, JobState.COMPLETED);

  const again = await env.jobs.enqueueJob({ task: "send_email", args, jobKey: "send_email:welcome:key-1" });
  expect(again.duplicate).toBe(true);
  expect(again.job!.id).toBe(a.job!.id);
  expect(again.job!.state).toBe(JobState.COMPLETED);
  expect(sendsFor("key-1")).toBe(1);
});

test("ListJobs filters by task, queue and state and pages newest first with an opaque token", async () => {
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) {
    ids.push((await env.jobs.enqueueJob({ task: "cleanup_storage", queue: "list", args: { objectKey: `originals/list-${i}` }, runAt: inOneHour() })).job!.id);
  }
  const seen: Job[] = [];
  let pageToken = "";
  let pages = 0;
  do {
    const page = await env.jobs.listJobs({ queue: "list", pageSize: 2, pageToken });
    seen.push(...page.jobs);
    pageToken = page.nextPageToken;
    pages++;
  } while (pageToken);
  expect(pages).toBe(3);
  expect(seen.map((j) => j.id)).toEqual([...ids].reverse());

  const scheduled = await env.jobs.listJobs({ task: "cleanup_storage", states: [JobState.SCHEDULED], pageSize: 100 });
  expect(scheduled.jobs.map((j) => j.id)).toEqual(expect.arrayContaining(ids));
  expect(scheduled.jobs.every((j) => j.state === JobState.SCHEDULED && j.task === "cleanup_storage")).toBe(true);
  expect((await env.jobs.listJobs({ queue: "list", states: [JobState.COMPLETED, JobState.DISCARDED] })).jobs).toEqual([]);
  expect((await env.jobs.listJobs({ task: "send_email", queue: "list" })).jobs).toEqual([]);

  const first = await env.jobs.listJobs({ queue: "list", pageSize: 2 });
  expect(fieldsOf(await rejection(env.jobs.listJobs({ queue: "other", pageToken: first.nextPageToken })))).toEqual(["pageToken"]);
  expect(fieldsOf(await rejection(env.jobs.listJobs({ pageToken: "not-a-token" })))).toEqual(["pageToken"]);
  expect(fieldsOf(await rejection(env.jobs.listJobs({ pageSize: 101 })))).toEqual(["pageSize"]);
  expect(fieldsOf(await rejection(env.jobs.listJobs({ states: [42 as JobState] })))).toEqual(["states[0]"]);
});

test("GetQueueStats and the mcsv_queue_jobs gauge count jobs per queue, task and state", async () => {
  const keep = (await env.jobs.enqueueJob({ task: "send_email", queue: "stats", args: welcome("stats-1"), runAt: inOneHour() })).job!;
  const drop = (await env.jobs.enqueueJob({ task: "send_email", queue: "stats", args: welcome("stats-2"), runAt: inOneHour() })).job!;
  await env.jobs.cancelJob({ id: drop.id });
  const { queues } = await env.jobs.getQueueStats({});
  expect(queues.find((q) => q.queue === "stats" && q.task === "send_email")).toMatchObject({
    available: 0n,
    scheduled: 1n,
    executing: 0n,
    cancelled: 1n,
    completed: 0n,
  });
  expect(queues.find((q) => q.queue === "" && q.task === "send_email")!.completed).toBeGreaterThan(0n);
  expect(keep.state).toBe(JobState.SCHEDULED);

  const metrics = await (await fetch(`${env.service.url}/metrics`)).text();
  expect(metrics).toMatch(/mcsv_queue_jobs\{task="send_email",state="cancelled"[^}]*\} [1-9]/);
  expect(metrics).toMatch(/mcsv_queue_jobs\{task="convert_image",state="executing"[^}]*\} 0/);
  expect(metrics).toMatch(/mcsv_job_attempts_total\{task="send_email",outcome="completed"[^}]*\} [1-9]/);
  expect(metrics).toMatch(/mcsv_job_attempts_total\{task="send_email",outcome="discarded"[^}]*\} [1-9]/);
  expect(metrics).toMatch(/mcsv_job_duration_seconds_count\{[^}]*task="send_email",outcome="retry"[^}]*\} [1-9]/);
});

test("after all those failures the service is still ready", async () => {
  const res = await fetch(`${env.service.url}/health/ready`);
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({ status: "ready", checks: { postgres: "ok" } });
});
