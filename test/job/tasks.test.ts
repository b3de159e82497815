/**
 * The job service's tasks against stand-ins for the services they call and a real S3 server (s3rver):
 * send_email → notify_client, convert_image (progress reports, presigning the original at call time, permanent and
 * last-attempt failures), notify_client's callback POST (signed with the tenant's webhook secrets, which come from
 * the gateway's own handler over the gateway's table: verified with standardwebhooks' verify, before and after a
 * rotation; and its send-time re-check of the URL: DNS rebinding), and cleanup_storage (one object, only under its
 * own prefixes, and the retention sweep). Links to PDFs are presigned when an email or a notification is sent:
 * job arguments carry object keys only. Also that a caller's W3C trace context reaches the services a job calls.
 */
import { existsSync, utimesSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { context, propagation } from "@opentelemetry/api";
import { create, type JsonObject } from "@bufbuild/protobuf";
import { CleanupStorageTaskSchema, ConversionState, EmailType, GetWebhookSigningSecretsResponseSchema, JobState } from "@mcsv/sdk";
import pg from "pg";
import { Webhook, WebhookVerificationError } from "standardwebhooks";
import { freePort } from "../../scripts/lib/embedded.js";
import { CallbackPolicy, type HostResolver } from "../../services/shared/callback-policy.js";
import { migrate } from "../../services/shared/database.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { isPermanentFailure, type TaskContext } from "../../services/job/tasks/context.js";
import { cleanupStorageTask } from "../../services/job/tasks/cleanup_storage.js";
import { createUserHandlers, type UserHandlerDeps } from "../../services/user/handlers.js";
import { WebhookSecrets } from "../../services/user/webhook-secrets.js";
import { deferred, eventually, propagateTraceContext, startJobTestEnv, STUB_WEBHOOK_SECRET, type JobTestEnv } from "./support.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
let env: JobTestEnv;

/** Callback hosts resolve through this table (no public DNS in the sandbox); a test may change an answer. */
const dns = new Map<string, string[]>();
const resolveHost: HostResolver = async (host) => {
  const addresses = dns.get(host);
  if (!addresses) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
  return addresses;
};
/** Ports of the local callback receivers, known before the job service starts: the allowlist must name them. */
let HOOK_PORT: number;
let REBIND_PORT: number;

beforeAll(async () => {
  propagateTraceContext();
  [HOOK_PORT, REBIND_PORT] = [await freePort(), await freePort()];
  env = await startJobTestEnv(
    {
      UPLOAD_RETENTION_HOURS: "2",
      PDF_RETENTION_DAYS: "3",
      CALLBACK_ALLOWED_HOSTS: `127.0.0.1:${HOOK_PORT}, *.example.com:${REBIND_PORT}`,
      NOTIFICATION_PDF_URL_TTL_SECONDS: "3600",
      // Every callback asks for the tenant's secrets (a rotation shows at once); the cache is tested on its own.
      WEBHOOK_SECRETS_CACHE_MS: "0",
    },
    { s3: true, resolveHost },
  );
});

afterAll(async () => {
  await env?.close();
  propagation.disable();
  context.disable();
});

beforeEach(() => env.stubs.reset());

const later = (ms: number) => new Date(Date.now() + ms).toISOString();

function convertArgs(conversionId: string) {
  return {
    request: { conversionId, inputFormat: "png", options: { quality: "QUALITY_HIGH" } },
    objectKey: `originals/${conversionId}`,
  };
}

/** Whether a value holds a presigned link, or a link field, anywhere: job arguments carry object keys only. */
function holdsLink(value: unknown): boolean {
  const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
  return /X-Amz-(Signature|Credential)|"(pdfUrl|pdf_url|imageUrl)"/i.test(text);
}

/** Objects a test put in the bucket, removed after it (the sweep's test counts what is there). */
const created: string[] = [];
afterEach(async () => {
  for (const key of created.splice(0)) await env.s3!.store.delete(key);
});

async function put(key: string, bytes: Uint8Array, contentType = "application/octet-stream"): Promise<void> {
  await env.s3!.store.put(key, bytes, { contentType });
  created.push(key);
}

/** A PDF in the bucket, as the image service leaves it. */
async function storedPdf(conversionId: string): Promise<{ key: string; bytes: Uint8Array }> {
  const key = `pdfs/${conversionId}.pdf`;
  const bytes = new TextEncoder().encode(`%PDF-1.7\n% ${conversionId}\n%%EOF\n`);
  await put(key, bytes, "application/pdf");
  return { key, bytes };
}

/** Fetches a presigned link the way a recipient would, and checks that it is one (signed, short-lived). */
async function download(link: string): Promise<{ status: number; bytes: Uint8Array; disposition: string | null }> {
  const url = new URL(link);
  expect(url.origin).toBe(env.s3!.handle.endpoint);
  expect(url.searchParams.get("X-Amz-Signature")).toBeTruthy();
  const res = await fetch(link);
  return { status: res.status, bytes: new Uint8Array(await res.arrayBuffer()), disposition: res.headers.get("content-disposition") };
}

function reportsFor(conversionId: string) {
  return env.stubs.calls.notifyImageConverted.filter((r) => r.conversionId === conversionId);
}

test("send_email sends, then a notify_client job tells the client; the caller's trace reaches both callees", async () => {
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const enqueuedAt = Date.now();
  const { job } = await env.jobs.enqueueJob(
    {
      task: "send_email",
      args: {
        request: { userId: "u-1", userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_CONVERSION_COMPLETE", idempotencyKey: "chain-1", variables: { filename: "chain.png" } },
        conversionId: "conv-chain",
      },
      jobKey: "send_email:conversion_complete:conv-chain",
    },
    { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
  );
  // The trace context travels in graphile's payload under a reserved key, never among the arguments.
  expect(job!.args).not.toHaveProperty("_trace");
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(env.stubs.calls.sendEmail[0]).toMatchObject({ userEmail: "ada@example.com", emailType: EmailType.CONVERSION_COMPLETE, idempotencyKey: "chain-1", variables: { filename: "chain.png" } });

  const notified = await eventually(
    async () => env.stubs.calls.notifyEmailSent,
    (calls) => calls.length > 0,
  );
  expect(notified).toHaveLength(1);
  expect(notified[0]).toMatchObject({ userId: "u-1", userEmail: "ada@example.com", emailType: EmailType.CONVERSION_COMPLETE, emailId: "email-chain-1", success: true, conversionId: "conv-chain" });
  // The email service's stand-in gives no time: the task stamps the notification when it is made, after the send.
  const sentAt = Number(notified[0]!.sentAt!.seconds) * 1000 + notified[0]!.sentAt!.nanos / 1e6;
  expect(sentAt).toBeGreaterThanOrEqual(enqueuedAt);
  expect(sentAt).toBeLessThanOrEqual(Date.now());

  const { jobs } = await env.jobs.listJobs({ task: "notify_client" });
  const notifyJob = jobs.find((j) => j.jobKey === "notify_client:email_sent:chain-1")!;
  expect((await env.waitForState(notifyJob.id, JobState.COMPLETED)).attempts).toBe(1);

  expect(env.stubs.traceparents.sendEmail[0]).toContain(traceId);
  expect(env.stubs.traceparents.notifyEmailSent[0]).toContain(traceId);
});

test("send_email presigns the PDF when it sends: the email carries a working link, the job's arguments only its key", async () => {
  const { key, bytes } = await storedPdf("conv-mail");
  const expiresAt = later(2 * DAY);
  const args = {
    request: { userEmail: "ada@example.com", emailType: "EMAIL_TYPE_CONVERSION_COMPLETE", idempotencyKey: "mail-1", variables: { state: "succeeded", filename: "cat.png" } },
    conversionId: "conv-mail",
    pdf: { key, filename: "cat.pdf", expiresAt },
  };
  const { job } = await env.jobs.enqueueJob({ task: "send_email", args });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(holdsLink(done.args)).toBe(false);
  expect(holdsLink((await env.jobs.listJobs({ task: "send_email" })).jobs)).toBe(false);

  const sent = env.stubs.calls.sendEmail.find((r) => r.idempotencyKey === "mail-1")!;
  expect(sent.variables).toMatchObject({ state: "succeeded", filename: "cat.png" });
  const fetched = await download(sent.variables["pdf_url"]!);
  expect(fetched).toMatchObject({ status: 200, bytes });
  expect(fetched.disposition).toContain("cat.pdf");
  // NOTIFICATION_PDF_URL_TTL_SECONDS (an hour here), as the link's own X-Amz-Expires says.
  expect(new URL(sent.variables["pdf_url"]!).searchParams.get("X-Amz-Expires")).toBe("3600");
  expect(Date.parse(sent.variables["pdf_url_expires_at"]!)).toBeGreaterThan(Date.now() + 3_500_000);

  // A link never outlives the PDF: 10 minutes of retention left make a 10-minute link.
  const { job: soon } = await env.jobs.enqueueJob({ task: "send_email", args: { ...args, request: { ...args.request, idempotencyKey: "mail-2" }, pdf: { ...args.pdf, expiresAt: later(600_000) } } });
  await env.waitForState(soon!.id, JobState.COMPLETED);
  const expires = Number(new URL(env.stubs.calls.sendEmail.find((r) => r.idempotencyKey === "mail-2")!.variables["pdf_url"]!).searchParams.get("X-Amz-Expires"));
  expect(expires).toBeGreaterThan(590);
  expect(expires).toBeLessThanOrEqual(600);

  // Links are signed as of the conversion's end: every attempt sends the same email (Resend's idempotency key
  // meets the same body), with a link that lives the TTL from then.
  const linkedAt = new Date(Date.now() - 60_000).toISOString();
  const again = async (idempotencyKey: string) => {
    const { job: each } = await env.jobs.enqueueJob({ task: "send_email", args: { ...args, request: { ...args.request, idempotencyKey }, pdf: { ...args.pdf, linkedAt } } });
    await env.waitForState(each!.id, JobState.COMPLETED);
    return env.stubs.calls.sendEmail.find((r) => r.idempotencyKey === idempotencyKey)!.variables;
  };
  const firstTry = await again("mail-a");
  await new Promise((resolve) => setTimeout(resolve, 1_100)); // a later attempt, in another second
  const secondTry = await again("mail-b");
  expect(secondTry["pdf_url"]).toBe(firstTry["pdf_url"]);
  expect(secondTry["pdf_url_expires_at"]).toBe(new Date(Date.parse(linkedAt) + 3_600_000).toISOString());
  expect(await download(firstTry["pdf_url"]!)).toMatchObject({ status: 200, bytes });
  // A link whose time ran out before the job ran is not sent either.
  const { job: stale } = await env.jobs.enqueueJob({ task: "send_email", args: { ...args, request: { ...args.request, idempotencyKey: "mail-4" }, pdf: { ...args.pdf, linkedAt: later(-2 * HOUR) } } });
  expect((await env.waitForState(stale!.id, JobState.DISCARDED)).errors[0]!.error).toContain("no link to send");

  // Past its retention the PDF is gone: no email with a dead link, the job ends at once.
  const { job: late } = await env.jobs.enqueueJob({ task: "send_email", args: { ...args, request: { ...args.request, idempotencyKey: "mail-3" }, pdf: { ...args.pdf, expiresAt: later(-1_000) } } });
  const discarded = await env.waitForState(late!.id, JobState.DISCARDED);
  expect(discarded.attempts).toBe(1);
  expect(discarded.errors[0]!.error).toContain("past its retention");
  expect(env.stubs.calls.sendEmail.filter((r) => r.idempotencyKey === "mail-3")).toHaveLength(0);
});

test("job arguments never keep a link: one sent in is dropped before the job is stored; keys outside their prefixes are refused", async () => {
  const linked = [
    { task: "send_email", args: { request: { userEmail: "a@example.com", emailType: "EMAIL_TYPE_CONVERSION_COMPLETE", variables: { pdf_url: "https://s3/pdfs/x.pdf?X-Amz-Signature=1" } } } },
    { task: "convert_image", args: { ...convertArgs("conv-url"), request: { ...convertArgs("conv-url").request, imageUrl: "https://s3/originals/conv-url?X-Amz-Signature=1" } } },
    { task: "notify_client", args: { pdfReady: { conversion: { id: "conv-url", pdfUrl: "https://s3/pdfs/x.pdf?X-Amz-Signature=1" } } } },
  ];
  for (const [i, job] of linked.entries()) {
    const { job: stored } = await env.jobs.enqueueJob({ task: job.task, args: job.args as unknown as JsonObject, jobKey: `linked-${i}`, runAt: timestampFromDate(new Date(Date.now() + HOUR)) });
    expect({ task: job.task, args: JSON.stringify(stored!.args) }).toEqual({ task: job.task, args: expect.not.stringContaining("X-Amz-Signature") });
  }
  const refused = [
    { task: "convert_image", args: { ...convertArgs("conv-url"), objectKey: "pdfs/elsewhere.pdf" } },
    { task: "send_email", args: { request: { userEmail: "a@example.com" }, pdf: { key: "originals/not-a-pdf", filename: "x.pdf" } } },
  ];
  for (const job of refused) {
    const error = await env.jobs.enqueueJob({ task: job.task, args: job.args as unknown as JsonObject }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect({ task: job.task, code: error?.code }).toEqual({ task: job.task, code: Code.InvalidArgument });
  }
});

test("convert_image converts at once and reports SUCCEEDED with the PDF's facts; a quick conversion reports no PROCESSING", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-ok") });
  expect(job!.maxAttempts).toBe(5);
  await env.waitForState(job!.id, JobState.COMPLETED);
  const reports = reportsFor("conv-ok");
  expect(reports.map((r) => r.state)).toEqual([ConversionState.SUCCEEDED]);
  expect(reports[0]).toMatchObject({ pdfKey: "pdfs/conv-ok.pdf", inputSize: 1000n, outputSize: 2000n, width: 64, height: 48, durationMs: 12n });
  expect(env.stubs.calls.convertImage).toHaveLength(1);
  expect(env.stubs.calls.convertImage[0]).toMatchObject({ conversionId: "conv-ok", inputFormat: "png" });
});

test("convert_image reports PROCESSING while a slow conversion runs, then SUCCEEDED", async () => {
  const converting = deferred();
  env.stubs.methods.convertImage = async (req) => {
    await converting.promise;
    return { pdfKey: `pdfs/${req.conversionId}.pdf`, outputSize: 2000n, width: 64, height: 48, durationMs: 900n };
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-slow") });
  // PROCESSING_REPORT_AFTER_MS (500 ms by default) into the conversion, the gateway hears PROCESSING.
  await eventually(async () => reportsFor("conv-slow").length, (n) => n === 1);
  expect(reportsFor("conv-slow").map((r) => r.state)).toEqual([ConversionState.PROCESSING]);
  converting.resolve();
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(reportsFor("conv-slow").map((r) => r.state)).toEqual([ConversionState.PROCESSING, ConversionState.SUCCEEDED]);
});

test("convert_image presigns the original from its key right before it calls the image service", async () => {
  const original = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  await put("originals/conv-late", original, "image/png");
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-late") });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(holdsLink(done.args)).toBe(false);
  const link = env.stubs.calls.convertImage[0]!.imageUrl;
  expect(new URL(link).pathname).toBe("/mcsv/originals/conv-late");
  expect(await download(link)).toMatchObject({ status: 200, bytes: original });
});

test("the original's link names the endpoint the services reach, not the public one that people's links name", async () => {
  const store = new ObjectStore({ ...env.config, S3_ENDPOINT: "http://minio:9000", S3_PUBLIC_ENDPOINT: "https://files.example.com" });
  expect(new URL((await store.presignGet("originals/x", { internal: true })).url).origin).toBe("http://minio:9000");
  expect(new URL((await store.presignGet("pdfs/x.pdf")).url).origin).toBe("https://files.example.com");
});

test("convert_image: an image service that is busy (unavailable, retry-after) defers the job without using an attempt", async () => {
  let refusals = 0;
  env.stubs.methods.convertImage = (req) => {
    if (refusals++ === 0) throw new ConnectError("this image service is busy; retry in 1 s", Code.Unavailable, { "retry-after": "1" });
    return { pdfKey: `pdfs/${req.conversionId}.pdf`, inputSize: 10n, outputSize: 20n, width: 4, height: 4, durationMs: 5n };
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-busy"), maxAttempts: 1 });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  // One attempt allowed, and used once: the busy answer did not count, left no error, and reported no failure
  // (the second dispatch, like any redelivery, first tells the gateway that the conversion is PROCESSING).
  expect(done).toMatchObject({ attempts: 1, maxAttempts: 1, errors: [] });
  expect(env.stubs.calls.convertImage).toHaveLength(2);
  expect(reportsFor("conv-busy").map((r) => r.state)).toEqual([ConversionState.PROCESSING, ConversionState.SUCCEEDED]);
});

test("convert_image: a permanent error is reported as FAILED and discards the job after one attempt", async () => {
  env.stubs.methods.convertImage = () => {
    throw new ConnectError("the image is not a PNG", Code.InvalidArgument);
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-bad") });
  const discarded = await env.waitForState(job!.id, JobState.DISCARDED);
  expect(discarded.attempts).toBe(1);
  expect(discarded.errors[0]!.error).toContain("the image is not a PNG");
  expect(env.stubs.calls.convertImage).toHaveLength(1);
  const reports = reportsFor("conv-bad");
  expect(reports.map((r) => r.state)).toEqual([ConversionState.FAILED]);
  expect(reports[0]!.error).toBe("the image is not a PNG");
});

test("a redelivered convert_image asks the gateway first, and stops without converting again when the conversion already finished", async () => {
  // The first attempt converts, but the gateway does not take its result; meanwhile the conversion finishes
  // otherwise (as a crash after the gateway recorded it would leave things).
  let finished = false;
  env.stubs.methods.notifyImageConverted = (req) => {
    if (finished) throw new ConnectError(`conversion ${req.conversionId} already succeeded`, Code.FailedPrecondition);
    finished = true;
    throw new ConnectError("gateway restarting", Code.Unavailable);
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-done") });
  const done = await env.waitForState(job!.id, JobState.COMPLETED);
  expect(done.attempts).toBe(2);
  expect(env.stubs.calls.convertImage).toHaveLength(1);
  expect(reportsFor("conv-done").map((r) => r.state)).toEqual([ConversionState.SUCCEEDED, ConversionState.PROCESSING]);
});

test("convert_image: a transient failure of the last attempt is reported as FAILED too", async () => {
  env.stubs.methods.convertImage = () => {
    throw new ConnectError("image service overloaded", Code.Unavailable);
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-tired"), maxAttempts: 1 });
  await env.waitForState(job!.id, JobState.DISCARDED);
  expect(reportsFor("conv-tired").map((r) => [r.state, r.error])).toEqual([[ConversionState.FAILED, "image service overloaded"]]);
});

interface Hook {
  received: { path: string; headers: IncomingMessage["headers"]; text: string; body: unknown }[];
  base: string;
  close(): Promise<void>;
}

/** A callback receiver on 127.0.0.1:`port`: /ok 204, /moved 302, anything else 404. */
async function startHook(port: number): Promise<Hook> {
  const received: Hook["received"] = [];
  const server: Server = createServer((req, res) => {
    let text = "";
    req.on("data", (chunk: Buffer) => (text += chunk.toString()));
    req.on("end", () => {
      received.push({ path: req.url ?? "", headers: req.headers, text, body: text ? JSON.parse(text) : undefined });
      if (req.url === "/ok") res.writeHead(204).end();
      else if (req.url === "/moved") res.writeHead(302, { location: "/ok" }).end();
      else res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    received,
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The signature headers a receiver verifies with. */
const signed = (r: Hook["received"][number]) => ({
  "webhook-id": String(r.headers["webhook-id"]),
  "webhook-timestamp": String(r.headers["webhook-timestamp"]),
  "webhook-signature": String(r.headers["webhook-signature"]),
});

test("notify_client delivers to the client service and POSTs the signed event to the callback URL, with a PDF link made at send time", async () => {
  const hook = await startHook(HOOK_PORT);
  try {
    const { key, bytes } = await storedPdf("conv-cb");
    const pdfReady = { conversion: { id: "conv-cb", userEmail: "ada@example.com", state: "CONVERSION_STATE_SUCCEEDED", filename: "cb.png" } };
    const pdf = { key, filename: "cb.pdf", expiresAt: later(3 * DAY) };
    const ok = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, pdf, tenant: "acme", callbackUrl: `${hook.base}/ok` } })).job!;
    const done = await env.waitForState(ok.id, JobState.COMPLETED);
    expect(holdsLink(done.args)).toBe(false);

    // The client service and the callback both get the conversion with a fresh link to the PDF.
    const notified = env.stubs.calls.notifyPdfReady[0]!.conversion!;
    expect(notified).toMatchObject({ id: "conv-cb", state: ConversionState.SUCCEEDED });
    expect(await download(notified.pdfUrl)).toMatchObject({ status: 200, bytes });
    expect(notified.pdfUrlExpiresAt).toBeDefined();
    expect(hook.received).toHaveLength(1);
    const [delivery] = hook.received;
    expect(delivery!.body).toMatchObject({ conversion: { ...pdfReady.conversion, pdfUrl: notified.pdfUrl } });
    expect(await download((delivery!.body as { conversion: { pdfUrl: string } }).conversion.pdfUrl)).toMatchObject({ status: 200, bytes });
    expect(delivery!.headers).toMatchObject({ "content-type": "application/json", "x-mcsv-event": "pdf_ready", "idempotency-key": `mcsv-job-${ok.id}`, "webhook-id": `mcsv-job-${ok.id}` });
    // Signed with the tenant's secret, as the gateway gave it for the payload's tenant.
    expect(new Webhook(STUB_WEBHOOK_SECRET).verify(delivery!.text, signed(delivery!))).toEqual(delivery!.body);
    expect(env.stubs.calls.getWebhookSigningSecrets.map((r) => r.tenant)).toEqual(["acme"]);

    // A 4xx answer, or a redirect (never followed), cannot be fixed by retrying: discarded after one attempt.
    for (const path of ["/gone", "/moved"]) {
      const job = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, callbackUrl: `${hook.base}${path}` } })).job!;
      const discarded = await env.waitForState(job.id, JobState.DISCARDED);
      expect(discarded.attempts).toBe(1);
      expect(discarded.errors[0]!.error).toContain(path === "/gone" ? "answered 404" : "redirects are not followed");
    }
    expect(hook.received.map((r) => r.path)).toEqual(["/ok", "/gone", "/moved"]);
    // A payload from before tenants is signed with the secrets of tenant 'default'.
    expect(env.stubs.calls.getWebhookSigningSecrets.map((r) => r.tenant)).toEqual(["acme", "default", "default"]);
  } finally {
    await hook.close();
  }
});

test("callbacks are signed with the tenant's secrets from the gateway: verified by standardwebhooks, forgeries fail, a rotation adds the new signature", async () => {
  // The gateway's own table and handler, on this test's Postgres.
  await migrate(env.pg.url, { dir: fileURLToPath(new URL("../../services/user/migrations", import.meta.url)), schema: "mcsv_user", logger: env.logger });
  const db = new pg.Pool({ connectionString: env.pg.url, max: 2 });
  const hook = await startHook(HOOK_PORT);
  try {
    const secrets = new WebhookSecrets(db, { graceMs: DAY });
    const gateway = createUserHandlers({ webhookSecrets: secrets } as unknown as UserHandlerDeps);
    env.stubs.methods.getWebhookSigningSecrets = async (req) => create(GetWebhookSigningSecretsResponseSchema, await gateway.getWebhookSigningSecrets(req, {} as HandlerContext));
    const pdfReady = { conversion: { id: "conv-signed", userEmail: "ada@example.com", state: "CONVERSION_STATE_FAILED", error: "boom" } };
    const deliver = async () => {
      const job = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, tenant: "signed-tenant", callbackUrl: `${hook.base}/ok` } })).job!;
      await env.waitForState(job.id, JobState.COMPLETED);
      return hook.received.at(-1)!;
    };

    // The first callback creates the tenant's secret: the one GetWebhookSecret hands the tenant.
    const first = await deliver();
    const original = (await secrets.current("signed-tenant")).secret;
    expect(original).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(signed(first)["webhook-signature"].split(" ")).toHaveLength(1);
    expect(new Webhook(original).verify(first.text, signed(first))).toEqual(pdfReady);
    // Altered in transit, or forged without the secret: refused.
    expect(() => new Webhook(original).verify(first.text.replace("boom", "fine"), signed(first))).toThrow(WebhookVerificationError);
    const forged = { ...signed(first), "webhook-signature": new Webhook(`whsec_${Buffer.alloc(32, 1).toString("base64")}`).sign(signed(first)["webhook-id"], new Date(), first.text) };
    expect(() => new Webhook(original).verify(first.text, forged)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(STUB_WEBHOOK_SECRET).verify(first.text, signed(first))).toThrow(WebhookVerificationError);

    // After a rotation both secrets sign during the grace period: receivers on either secret accept it.
    const { current } = await secrets.rotate("signed-tenant");
    expect(current.secret).not.toBe(original);
    const second = await deliver();
    expect(signed(second)["webhook-signature"].split(" ")).toHaveLength(2);
    expect(new Webhook(current.secret).verify(second.text, signed(second))).toEqual(pdfReady);
    expect(new Webhook(original).verify(second.text, signed(second))).toEqual(pdfReady);
    // Once the grace period is over, the previous secret no longer signs.
    await db.query("update mcsv_user.webhook_secrets set expires_at = now() - interval '1 second' where secret = $1", [original]);
    const third = await deliver();
    expect(signed(third)["webhook-signature"].split(" ")).toHaveLength(1);
    expect(new Webhook(current.secret).verify(third.text, signed(third))).toEqual(pdfReady);
    expect(() => new Webhook(original).verify(third.text, signed(third))).toThrow(WebhookVerificationError);
  } finally {
    await hook.close();
    await db.end();
  }
});

test("notify_client checks the callback URL again when it sends: a host rebound to 127.0.0.1 since the gateway's check is refused for good", async () => {
  const received: string[] = [];
  const hook: Server = createServer((req, res) => {
    received.push(req.url ?? "");
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => hook.listen(REBIND_PORT, "127.0.0.1", resolve));
  const url = `http://rebind.example.com:${REBIND_PORT}/ok?token=s3cret`;
  try {
    // The gateway accepted the URL while the host resolved to a public address (same allowlist, same policy) …
    dns.set("rebind.example.com", ["93.184.216.34"]);
    expect(await CallbackPolicy.fromConfig(env.config, resolveHost).check(url)).toMatchObject({ url });
    // … and by the time the job runs, DNS answers the address of a local server.
    dns.set("rebind.example.com", ["127.0.0.1"]);
    const pdfReady = { conversion: { id: "conv-rebind", userEmail: "ada@example.com", state: "CONVERSION_STATE_FAILED" } };
    const job = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, callbackUrl: url } })).job!;
    const discarded = await env.waitForState(job.id, JobState.DISCARDED);
    expect(discarded.attempts).toBe(1);
    expect(discarded.errors[0]!.error).toContain("refused: host rebind.example.com resolves to a non-public address");
    expect(discarded.errors[0]!.error).not.toContain("s3cret");
    expect(env.stubs.calls.notifyPdfReady).toHaveLength(1);
    expect(received).toEqual([]);
  } finally {
    dns.delete("rebind.example.com");
    await new Promise((resolve) => hook.close(resolve));
  }
});

/** Back-dates an object in s3rver's directory (it reports the file's mtime as LastModified). */
function age(key: string, ageMs: number): void {
  const parts = key.split("/");
  const file = join(env.s3!.dir, "mcsv", ...parts.slice(0, -1), `${parts.at(-1)}._S3rver_object`);
  expect(existsSync(file)).toBe(true);
  const when = new Date(Date.now() - ageMs);
  utimesSync(file, when, when);
}

async function keysIn(...prefixes: string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const prefix of prefixes) for await (const o of env.s3!.store.list(prefix)) keys.push(o.key);
  return keys.sort();
}

test("cleanup_storage deletes one object, and deleting it again succeeds", async () => {
  const store = env.s3!.store;
  await store.put("originals/conv-clean", new Uint8Array([1, 2, 3]), { contentType: "image/png" });
  for (let i = 0; i < 2; i++) {
    const { job } = await env.jobs.enqueueJob({ task: "cleanup_storage", args: { objectKey: "originals/conv-clean" } });
    await env.waitForState(job!.id, JobState.COMPLETED);
    expect(await store.head("originals/conv-clean")).toBeUndefined();
  }
});

test("cleanup_storage deletes only under its own prefixes: any other key is refused, and nothing is deleted", async () => {
  const store = env.s3!.store;
  const elsewhere = ["elsewhere/precious", "backups/db.dump", "originals/../backups/db.dump", "originals/a/b", "pdfs/", "originals", ""];
  await put("backups/db.dump", new Uint8Array([1]));
  await put("elsewhere/precious", new Uint8Array([2]));
  // Refused when enqueued (the one way in for a caller) …
  for (const objectKey of elsewhere) {
    const error = await env.jobs.enqueueJob({ task: "cleanup_storage", args: { objectKey } }).then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect({ objectKey, code: error?.code }).toEqual({ objectKey, code: Code.InvalidArgument });
  }
  // … and by the task itself, for good (a permanent error), should such a job reach it another way.
  const task = cleanupStorageTask({ store, uploadMaxAgeMs: HOUR, pdfMaxAgeMs: DAY });
  const ctx = { jobId: "1", attempt: 1, maxAttempts: 5, isLastAttempt: false, signal: new AbortController().signal, logger: env.logger } as unknown as TaskContext;
  for (const objectKey of ["backups/db.dump", "elsewhere/precious"]) {
    const error = await task.run(create(CleanupStorageTaskSchema, { target: { case: "objectKey", value: objectKey } }), ctx).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(isPermanentFailure(error)).toBe(true);
    expect(error!.message).toContain("not an object key under uploads/, originals/, pdfs/");
  }
  expect(await keysIn("backups/", "elsewhere/")).toEqual(["backups/db.dump", "elsewhere/precious"]);
  // The owned prefixes still work.
  await store.put("uploads/owned", new Uint8Array([3]), { contentType: "application/octet-stream" });
  await task.run(create(CleanupStorageTaskSchema, { target: { case: "objectKey", value: "uploads/owned" } }), ctx);
  expect(await store.head("uploads/owned")).toBeUndefined();
});

test("the sweep deletes only uploads, originals and PDFs past their retention", async () => {
  const store = env.s3!.store;
  const objects: [string, number][] = [
    ["uploads/old", 3 * HOUR],
    ["uploads/young", 1 * HOUR],
    ["originals/old", 4 * DAY],
    ["originals/young", 2 * DAY],
    ["pdfs/old.pdf", 4 * DAY],
    ["pdfs/young.pdf", 1 * HOUR],
    ["elsewhere/ancient", 30 * DAY],
  ];
  for (const [key, ageMs] of objects) {
    await store.put(key, new Uint8Array([7]), { contentType: "application/octet-stream" });
    age(key, ageMs);
  }
  // The bucket lists each object at its new age before the sweep runs (s3rver may still be finishing a write).
  const listed = new Map<string, Date | undefined>();
  await eventually(
    async () => {
      for (const prefix of ["uploads/", "originals/", "pdfs/", "elsewhere/"]) for await (const o of store.list(prefix)) listed.set(o.key, o.lastModified);
      return objects;
    },
    (all) => all.every(([key, ageMs]) => (listed.get(key)?.getTime() ?? Infinity) <= Date.now() - ageMs + 60_000),
  );
  const { job } = await env.jobs.enqueueJob({ task: "cleanup_storage", args: { sweep: true } });
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(await keysIn("uploads/", "originals/", "pdfs/", "elsewhere/")).toEqual(["elsewhere/ancient", "originals/young", "pdfs/young.pdf", "uploads/young"]);
});
