/**
 * The job service's tasks against stand-ins for the services they call and a real S3 server (s3rver):
 * send_email → notify_client, convert_image (progress reports, re-presigning, permanent and last-attempt failures),
 * notify_client's callback POST (and its send-time re-check of the URL: DNS rebinding), and cleanup_storage (one
 * object, and the retention sweep). Also that a caller's W3C trace context reaches the services a job calls.
 */
import { existsSync, utimesSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { context, propagation } from "@opentelemetry/api";
import { ConversionState, EmailType, JobState } from "@mcsv/sdk";
import { CallbackPolicy, type HostResolver } from "../../services/shared/callback-policy.js";
import { eventually, propagateTraceContext, startJobTestEnv, type JobTestEnv } from "./support.js";

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
const CALLBACK_ALLOWED_HOSTS = "127.0.0.1, *.example.com";

beforeAll(async () => {
  propagateTraceContext();
  env = await startJobTestEnv({ UPLOAD_RETENTION_HOURS: "2", PDF_RETENTION_DAYS: "3", CALLBACK_ALLOWED_HOSTS }, { s3: true, resolveHost });
});

afterAll(async () => {
  await env?.close();
  propagation.disable();
  context.disable();
});

beforeEach(() => env.stubs.reset());

const later = (ms: number) => new Date(Date.now() + ms).toISOString();

function convertArgs(conversionId: string, imageUrlExpiresAt = later(15 * 60_000)) {
  return {
    request: { conversionId, imageUrl: `https://images.example/${conversionId}?sig=old`, inputFormat: "png", options: { quality: "QUALITY_HIGH" } },
    objectKey: `originals/${conversionId}`,
    imageUrlExpiresAt,
  };
}

function reportsFor(conversionId: string) {
  return env.stubs.calls.notifyImageConverted.filter((r) => r.conversionId === conversionId);
}

test("send_email sends, then a notify_client job tells the client; the caller's trace reaches both callees", async () => {
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const { job } = await env.jobs.enqueueJob(
    {
      task: "send_email",
      args: {
        request: { userId: "u-1", userEmail: "ada@example.com", userName: "Ada", emailType: "EMAIL_TYPE_CONVERSION_COMPLETE", idempotencyKey: "chain-1", variables: { pdf_url: "https://x/y.pdf" } },
        conversionId: "conv-chain",
      },
      jobKey: "send_email:conversion_complete:conv-chain",
    },
    { headers: { traceparent: `00-${traceId}-00f067aa0ba902b7-01` } },
  );
  // The trace context travels in graphile's payload under a reserved key, never among the arguments.
  expect(job!.args).not.toHaveProperty("_trace");
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(env.stubs.calls.sendEmail[0]).toMatchObject({ userEmail: "ada@example.com", emailType: EmailType.CONVERSION_COMPLETE, idempotencyKey: "chain-1", variables: { pdf_url: "https://x/y.pdf" } });

  const notified = await eventually(
    async () => env.stubs.calls.notifyEmailSent,
    (calls) => calls.length > 0,
  );
  expect(notified).toHaveLength(1);
  expect(notified[0]).toMatchObject({ userId: "u-1", userEmail: "ada@example.com", emailType: EmailType.CONVERSION_COMPLETE, emailId: "email-chain-1", success: true, conversionId: "conv-chain" });
  expect(notified[0]!.sentAt).toBeDefined();

  const { jobs } = await env.jobs.listJobs({ task: "notify_client" });
  const notifyJob = jobs.find((j) => j.jobKey === "notify_client:email_sent:chain-1")!;
  expect((await env.waitForState(notifyJob.id, JobState.COMPLETED)).attempts).toBe(1);

  expect(env.stubs.traceparents.sendEmail[0]).toContain(traceId);
  expect(env.stubs.traceparents.notifyEmailSent[0]).toContain(traceId);
});

test("convert_image reports PROCESSING, converts, then reports SUCCEEDED with the PDF's facts", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-ok") });
  expect(job!.maxAttempts).toBe(5);
  await env.waitForState(job!.id, JobState.COMPLETED);
  const reports = reportsFor("conv-ok");
  expect(reports.map((r) => r.state)).toEqual([ConversionState.PROCESSING, ConversionState.SUCCEEDED]);
  expect(reports[1]).toMatchObject({ pdfKey: "pdfs/conv-ok.pdf", inputSize: 1000n, outputSize: 2000n, width: 64, height: 48, durationMs: 12n });
  expect(env.stubs.calls.convertImage).toHaveLength(1);
  // The enqueued URL had time left: it is passed on unchanged, with the rest of the request.
  expect(env.stubs.calls.convertImage[0]).toMatchObject({ conversionId: "conv-ok", imageUrl: "https://images.example/conv-ok?sig=old", inputFormat: "png" });
});

test("convert_image presigns the original again when the enqueued URL is about to expire", async () => {
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-late", later(20_000)) });
  await env.waitForState(job!.id, JobState.COMPLETED);
  const url = new URL(env.stubs.calls.convertImage[0]!.imageUrl);
  expect(url.origin).toBe(env.s3!.handle.endpoint);
  expect(url.pathname).toBe("/mcsv/originals/conv-late");
  expect(url.searchParams.get("X-Amz-Signature")).toBeTruthy();
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
  expect(reports.map((r) => r.state)).toEqual([ConversionState.PROCESSING, ConversionState.FAILED]);
  expect(reports[1]!.error).toBe("the image is not a PNG");
});

test("convert_image stops without converting when the gateway says the conversion already finished", async () => {
  env.stubs.methods.notifyImageConverted = (req) => {
    throw new ConnectError(`conversion ${req.conversionId} already succeeded`, Code.FailedPrecondition);
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-done") });
  expect((await env.waitForState(job!.id, JobState.COMPLETED)).attempts).toBe(1);
  expect(env.stubs.calls.convertImage).toHaveLength(0);
});

test("convert_image: a transient failure of the last attempt is reported as FAILED too", async () => {
  env.stubs.methods.convertImage = () => {
    throw new ConnectError("image service overloaded", Code.Unavailable);
  };
  const { job } = await env.jobs.enqueueJob({ task: "convert_image", args: convertArgs("conv-tired"), maxAttempts: 1 });
  await env.waitForState(job!.id, JobState.DISCARDED);
  expect(reportsFor("conv-tired").map((r) => [r.state, r.error])).toEqual([
    [ConversionState.PROCESSING, ""],
    [ConversionState.FAILED, "image service overloaded"],
  ]);
});

test("notify_client delivers to the client service and POSTs the event to the callback URL", async () => {
  const received: { path: string; headers: IncomingMessage["headers"]; body: unknown }[] = [];
  const hook: Server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      received.push({ path: req.url ?? "", headers: req.headers, body: body ? JSON.parse(body) : undefined });
      if (req.url === "/ok") res.writeHead(204).end();
      else if (req.url === "/moved") res.writeHead(302, { location: "/ok" }).end();
      else res.writeHead(404).end();
    });
  });
  await new Promise<void>((resolve) => hook.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(hook.address() as AddressInfo).port}`;
  try {
    const pdfReady = { conversion: { id: "conv-cb", userEmail: "ada@example.com", state: "CONVERSION_STATE_SUCCEEDED", pdfUrl: "https://s3/pdf" } };
    const ok = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, callbackUrl: `${base}/ok` } })).job!;
    await env.waitForState(ok.id, JobState.COMPLETED);
    expect(env.stubs.calls.notifyPdfReady[0]!.conversion).toMatchObject({ id: "conv-cb", state: ConversionState.SUCCEEDED, pdfUrl: "https://s3/pdf" });
    expect(received).toHaveLength(1);
    expect(received[0]!.body).toEqual(pdfReady);
    expect(received[0]!.headers).toMatchObject({ "content-type": "application/json", "x-mcsv-event": "pdf_ready", "idempotency-key": `mcsv-job-${ok.id}` });

    // A 4xx answer, or a redirect (never followed), cannot be fixed by retrying: discarded after one attempt.
    for (const path of ["/gone", "/moved"]) {
      const job = (await env.jobs.enqueueJob({ task: "notify_client", args: { pdfReady, callbackUrl: `${base}${path}` } })).job!;
      const discarded = await env.waitForState(job.id, JobState.DISCARDED);
      expect(discarded.attempts).toBe(1);
      expect(discarded.errors[0]!.error).toContain(path === "/gone" ? "answered 404" : "redirects are not followed");
    }
    expect(received.map((r) => r.path)).toEqual(["/ok", "/gone", "/moved"]);
  } finally {
    await new Promise((resolve) => hook.close(resolve));
  }
});

test("notify_client checks the callback URL again when it sends: a host rebound to 127.0.0.1 since the gateway's check is refused for good", async () => {
  const received: string[] = [];
  const hook: Server = createServer((req, res) => {
    received.push(req.url ?? "");
    res.writeHead(204).end();
  });
  await new Promise<void>((resolve) => hook.listen(0, "127.0.0.1", resolve));
  const url = `http://rebind.example.com:${(hook.address() as AddressInfo).port}/ok?token=s3cret`;
  try {
    // The gateway accepted the URL while the host resolved to a public address (same allowlist, same policy) …
    dns.set("rebind.example.com", ["93.184.216.34"]);
    expect(await new CallbackPolicy(env.config.CALLBACK_ALLOWED_HOSTS, resolveHost).check(url)).toMatchObject({ url });
    // … and by the time the job runs, DNS answers the address of a local server.
    dns.set("rebind.example.com", ["127.0.0.1"]);
    const pdfReady = { conversion: { id: "conv-rebind", userEmail: "ada@example.com", state: "CONVERSION_STATE_SUCCEEDED", pdfUrl: "https://s3/pdf" } };
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
  const { job } = await env.jobs.enqueueJob({ task: "cleanup_storage", args: { sweep: true } });
  await env.waitForState(job!.id, JobState.COMPLETED);
  expect(await keysIn("uploads/", "originals/", "pdfs/", "elsewhere/")).toEqual(["elsewhere/ancient", "originals/young", "pdfs/young.pdf", "uploads/young"]);
});
