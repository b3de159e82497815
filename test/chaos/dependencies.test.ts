/**
 * Faults of what the services depend on, on the real system: Resend refusing (rate limit, then a bad request),
 * S3 unreachable, and Postgres restarting under both workflows. No service process exits, readiness says what is
 * missing while it is missing, and every workflow completes, exactly once.
 */
import { Code } from "@connectrpc/connect";
import { ClientService, JobState, type Job } from "@mcsv/sdk";
import type { ServiceKey } from "../../services/shared/topology.js";
import {
  allSucceeded,
  convertRequest,
  emailsTo,
  eventually,
  exactlyOneEmailEach,
  imageMagickStarted,
  jobByKey,
  outcomeOf,
  pdfKeys,
  readiness,
  smallPng,
  startChaosSystem,
  type ChaosSystem,
} from "./support.js";

let system: ChaosSystem;

beforeAll(async () => {
  system = await startChaosSystem();
}, 120_000);

afterAll(async () => {
  system?.gate.release();
  await system?.close();
});

afterEach(() => system.gate.release());

const emailRequests = (idempotencyKey: string) =>
  system.sink.requests().filter((r) => r.method === "POST" && r.path === "/emails" && r.headers["idempotency-key"] === idempotencyKey);

async function welcomeJob(userId: string, done: (job: Job) => boolean): Promise<Job> {
  return eventually(async () => {
    const job = await jobByKey(system, "send_email", `send_email:welcome:${userId}`);
    return job && done(job) ? job : undefined;
  }, `the welcome email job of ${userId}`);
}

test("Resend answers 429 twice, then 200: one delivery, the same idempotency key on every attempt", async () => {
  system.sink.failNext(429, undefined, 2);
  const { user } = await system.users.createUser({ name: "Rate Limited", email: "rate-limited@example.com", idempotencyKey: "rate-limited" });
  const job = await welcomeJob(user!.id, (j) => j.state === JobState.COMPLETED);

  const key = `welcome:${user!.id}`;
  expect(emailRequests(key).map((r) => r.status)).toEqual([429, 429, 200]);
  expect(job.attempts).toBe(3);
  expect(job.errors.map((e) => e.attempt)).toEqual([1, 2]);
  expect(job.errors[0]!.error).toMatch(/429/);
  await exactlyOneEmailEach(system, ["rate-limited@example.com"]);
});

test("Resend answers 422: the send_email job fails for good after one attempt, visible through GetJobStatus", async () => {
  system.sink.failNext(422, { statusCode: 422, name: "validation_error", message: "The `to` field is invalid." });
  const { user } = await system.users.createUser({ name: "Refused", email: "refused@example.com", idempotencyKey: "refused" });
  const listed = await welcomeJob(user!.id, (j) => j.state === JobState.DISCARDED);

  const { job } = await system.jobs.getJobStatus({ id: listed.id });
  expect(job).toMatchObject({ state: JobState.DISCARDED, attempts: 1 });
  expect(job!.errors).toHaveLength(1);
  expect(job!.errors[0]!.error).toMatch(/422.*validation_error.*The `to` field is invalid/);
  expect(job!.discardedAt).toBeDefined();
  expect(emailRequests(`welcome:${user!.id}`)).toHaveLength(1);
  expect(emailsTo(system, "refused@example.com")).toHaveLength(0);
  // The client hears that the email did not go out.
  const clientEvents = system.client(ClientService, "client");
  const event = await eventually(async () => {
    const { events } = await clientEvents.listEvents({ limit: 100 });
    return events.find((e) => e.event.case === "emailSent" && e.event.value.userEmail === "refused@example.com");
  }, "the email_sent failure callback");
  expect(event.event.case === "emailSent" && event.event.value.success).toBe(false);
});

test("S3 unreachable: ConvertImage is refused as unavailable at once, and a conversion queued before retries and completes", async () => {
  const before = system.gate.started();
  system.gate.hold();
  const queued = convertRequest(await smallPng(1), "s3-queued@example.com", "s3-queued");
  const { conversion } = await system.users.convertImage(queued);
  // Its original is fetched and it waits inside ImageMagick: the PDF upload will meet the outage.
  await imageMagickStarted(system, before);

  const refused = convertRequest(await smallPng(2), "s3-refused@example.com", "s3-refused");
  let duringOutage: Awaited<ReturnType<typeof outcomeOf>> | undefined;
  let readinessDuringOutage: Record<string, number> = {};
  await system.s3!.restart(async () => {
    duringOutage = await outcomeOf(system.users.convertImage(refused));
    readinessDuringOutage = { user: await readiness(system.urls.user), image: await readiness(system.urls.image) };
    system.gate.release();
    // The held conversion fails to store its PDF; the job records the failure and waits for its retry.
    await eventually(async () => {
      const job = await jobByKey(system, "convert_image", `convert_image:${conversion!.id}`);
      return job && job.errors.length > 0 ? job : undefined;
    }, "a failed convert_image attempt");
  });

  expect(duringOutage).toMatchObject({ ok: false, code: Code.Unavailable });
  expect(readinessDuringOutage).toEqual({ user: 503, image: 503 });
  const [done] = await allSucceeded(system, [conversion!.id]);
  expect(done!.pdfUrl).toMatch(/^http/);
  expect((await pdfKeys(system)).filter((k) => k.includes(conversion!.id))).toEqual([`pdfs/${conversion!.id}.pdf`]);
  // The job completes a moment after it reported the result.
  const job = await eventually(async () => {
    const found = await jobByKey(system, "convert_image", `convert_image:${conversion!.id}`);
    return found?.state === JobState.COMPLETED ? found : undefined;
  }, "the convert_image job to complete");
  expect(job.errors[0]!.error).toMatch(/unavailable|storing the PDF failed|download failed/i);

  // The refused request, sent again once S3 is back, is accepted and completes.
  const again = await system.users.convertImage(refused);
  await allSucceeded(system, [again.conversion!.id]);
  await exactlyOneEmailEach(system, [queued.userEmail, refused.userEmail]);
});

test("Postgres restarts under both workflows: no process exits, readiness follows Postgres, every workflow completes once", async () => {
  const pids = Object.fromEntries([...system.services].map(([key, proc]) => [key, proc.child.pid])) as Record<ServiceKey, number>;
  const before = system.gate.started();
  system.gate.hold();
  const users = await Promise.all(
    Array.from({ length: 5 }, (_, i) => system.users.createUser({ name: `Restart ${i}`, email: `pg-user-${i}@example.com`, idempotencyKey: `pg-user-${i}` })),
  );
  const conversions = await Promise.all(
    Array.from({ length: 5 }, async (_, i) => (await system.users.convertImage(convertRequest(await smallPng(10 + i), `pg-conversion-${i}@example.com`, `pg-conversion-${i}`))).conversion!),
  );
  // Conversions are mid-flight (inside ImageMagick) when Postgres goes away; their results arrive while it is down.
  await imageMagickStarted(system, before);

  let downReadiness: Record<string, number> = {};
  let createDuringOutage: Awaited<ReturnType<typeof outcomeOf>> | undefined;
  let outageLogs = 0;
  let afterOutageLogs = 0;
  await system.postgres!.restart(async () => {
    outageLogs = system.logs.length;
    createDuringOutage = await outcomeOf(system.users.createUser({ name: "During", email: "pg-during@example.com", idempotencyKey: "pg-during" }));
    // Both services that keep state in Postgres say so; the others do not depend on it.
    downReadiness = await eventually(async () => {
      const states = { user: await readiness(system.urls.user), job: await readiness(system.urls.job), email: await readiness(system.urls.email) };
      return states.user === 503 && states.job === 503 ? states : undefined;
    }, "user and job to be not ready");
    system.gate.release();
    // Let the held conversions finish and their reports meet the outage.
    await new Promise((r) => setTimeout(r, 1_000));
    afterOutageLogs = system.logs.length;
  });
  // The conversions' jobs did meet the outage: the job service saw Postgres, or the gateway's answer, fail.
  const metOutage = system.logs
    .slice(outageLogs, afterOutageLogs)
    .filter((l) => l.service === "job" && /"level":"(warn|error)"/.test(l.raw) && /database|unavailable|ECONNREFUSED|terminat|Connection/i.test(l.raw));
  expect(metOutage.length).toBeGreaterThan(0);
  expect(downReadiness).toEqual({ user: 503, job: 503, email: 200 });
  // Refused as unavailable (a client retries it), not as an internal error.
  expect(createDuringOutage).toMatchObject({ ok: false, code: Code.Unavailable });

  for (const key of ["user", "job", "email", "image", "client"] as const) {
    await eventually(async () => ((await readiness(system.urls[key])) === 200 ? true : undefined), `${key} to be ready again`);
  }
  await allSucceeded(
    system,
    conversions.map((c) => c.id),
  );
  await exactlyOneEmailEach(system, [...users.map((u) => u.user!.email), ...conversions.map((c) => c.userEmail)]);
  for (const [key, proc] of system.services) {
    expect({ key, pid: proc.child.pid, exitCode: proc.child.exitCode, signal: proc.child.signalCode }).toEqual({ key, pid: pids[key], exitCode: null, signal: null });
  }
});
