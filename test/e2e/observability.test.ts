/**
 * Observability end to end, on the five real processes: traces exported over OTLP to a receiver in this test,
 * /metrics of every service (classic text and OpenMetrics with exemplars), the JSON logs, and the dashboards and
 * alert rules checked against what the services really expose.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClientService, Quality, UserService } from "@mcsv/sdk";
import { ConversionState } from "@mcsv/sdk";
import { SERVICES, SERVICE_KEYS, SERVICE_VERSION, type ServiceKey } from "../../services/shared/topology.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from "../support/otlp-receiver.js";
import { photoLikePng } from "../support/pdf.js";
import { collectExpressions, metricNamesIn, ROOT } from "../support/promql.js";
import { logqlNames, observabilityRecipes, RECIPES_DOC, traceqlNames } from "../support/recipes.js";
import { eventually, startTestSystem, type TestSystem } from "../support/system.js";

let receiver: OtlpReceiver;
let system: TestSystem;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  system = await startTestSystem({
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
}, 120_000);

afterAll(async () => {
  await system?.close();
  await receiver?.close();
});

// ---- spans ------------------------------------------------------------------------------------------------------

const CONNECT_SERVER = "server";

function spansOf(traceId: string): ReceivedSpan[] {
  return receiver.spans.filter((s) => s.traceId === traceId);
}

/** The single span matching, failing with the names present when there is none or more than one. */
function only(spans: ReceivedSpan[], service: ServiceKey, name: string, kind?: ReceivedSpan["kind"]): ReceivedSpan {
  const found = spans.filter((s) => s.service === SERVICES[service].name && s.name === name && (!kind || s.kind === kind));
  if (found.length !== 1) throw new Error(`expected one ${kind ?? ""} span "${name}" of ${service}, found ${found.length} among ${spans.map((s) => `${s.service}:${s.name}`).join(", ")}`);
  return found[0]!;
}

function parentOf(span: ReceivedSpan): ReceivedSpan | undefined {
  return receiver.spans.find((s) => s.traceId === span.traceId && s.spanId === span.parentSpanId);
}

/** The span's ancestors, nearest first, up to the root; throws when a parent never arrived. */
function ancestors(span: ReceivedSpan): ReceivedSpan[] {
  const chain: ReceivedSpan[] = [];
  for (let current = span; current.parentSpanId; ) {
    const parent = parentOf(current);
    if (!parent) throw new Error(`the parent of ${current.service}:${current.name} is missing`);
    chain.push(parent);
    current = parent;
  }
  return chain;
}

/** Waits until the trace that the gateway's server span `rootName` starts contains each of the `last` spans. */
async function traceOf(rootName: string, since: number, last: Array<[ServiceKey, string]>): Promise<ReceivedSpan[]> {
  const root = await eventually(
    () => receiver.spans.slice(since).find((s) => s.service === SERVICES.user.name && s.kind === CONNECT_SERVER && s.name === rootName),
    `the ${rootName} server span`,
  );
  for (const [service, name] of last) {
    await eventually(() => (spansOf(root.traceId).some((s) => s.service === SERVICES[service].name && s.name === name) ? true : undefined), `${name} in the ${rootName} trace`);
  }
  // The exporters batch: give the spans that ended at the same time as the last one a moment to arrive.
  await new Promise((resolve) => setTimeout(resolve, 500));
  return spansOf(root.traceId);
}

/** Every Connect CLIENT span of the trace has exactly one SERVER child in the service it called, with the RPC attributes. */
function expectConnectHopsLinked(spans: ReceivedSpan[]): void {
  const clients = spans.filter((s) => s.kind === "client" && s.attributes["rpc.system"] === "connect_rpc");
  expect(clients.length).toBeGreaterThan(0);
  for (const client of clients) {
    const servers = spans.filter((s) => s.kind === CONNECT_SERVER && s.parentSpanId === client.spanId);
    expect(servers.map((s) => s.name)).toEqual([client.name]);
    const server = servers[0]!;
    expect(server.service).not.toBe(client.service);
    for (const span of [client, server]) {
      expect(span.attributes).toEqual(
        expect.objectContaining({
          "rpc.system": "connect_rpc",
          "rpc.service": client.name.split("/")[0],
          "rpc.method": client.name.split("/")[1],
          "server.address": "127.0.0.1",
          "server.port": expect.any(Number),
        }),
      );
    }
    expect(client.attributes["server.port"]).toBe(server.attributes["server.port"]);
    expect(server.attributes["server.port"]).toBe(Number(new URL(system.urls[SERVICE_KEYS.find((k) => SERVICES[k].name === server.service)!]).port));
  }
}

/** The job span of `task` continues the trace of the EnqueueJobs call that added it (the ledger keeps the trace context). */
function expectJobContinuesEnqueue(spans: ReceivedSpan[], task: string): ReceivedSpan {
  const job = spans.find((s) => s.service === SERVICES.job.name && s.name === `job ${task}`);
  expect(job).toBeDefined();
  const chain = ancestors(job!);
  // Enqueued over RPC (the gateway's outbox relay) or by another task of the same trace: either way an EnqueueJobs
  // server span or a job span sits above it, and the chain ends at the gateway's root span.
  expect(chain.some((s) => (s.kind === CONNECT_SERVER && s.name === "mcsv.v1.JobService/EnqueueJobs") || s.name.startsWith("job "))).toBe(true);
  expect(chain.at(-1)!.service).toBe(SERVICES.user.name);
  return job!;
}

function servicesIn(spans: ReceivedSpan[]): string[] {
  return [...new Set(spans.map((s) => s.service))].sort();
}

// ---- metrics ----------------------------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
  exemplar?: { labels: Record<string, string>; value: number };
}

interface Scrape {
  contentType: string;
  text: string;
  samples: Sample[];
  /** Family name → type, from the `# TYPE` lines. */
  types: Map<string, string>;
}

function parseLabels(text: string | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [, key, value] of (text ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = JSON.parse(`"${value!}"`) as string;
  return labels;
}

/** The Prometheus text format (or OpenMetrics), enough of it for these assertions. */
function parseExposition(text: string, contentType: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) types.set(type[1]!, type[2]!);
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*?)\})? (\S+)(?: # \{(.*?)\} (\S+)(?: \S+)?)?$/.exec(line);
    if (!match) throw new Error(`unparsable exposition line: ${line}`);
    const [, name, labels, value, exemplarLabels, exemplarValue] = match;
    samples.push({
      name: name!,
      labels: parseLabels(labels),
      value: Number(value),
      ...(exemplarLabels !== undefined ? { exemplar: { labels: parseLabels(exemplarLabels), value: Number(exemplarValue) } } : {}),
    });
  }
  return { contentType, text, samples, types };
}

async function scrape(key: ServiceKey, accept?: string): Promise<Scrape> {
  const res = await fetch(`${system.urls[key]}/metrics`, accept ? { headers: { accept } } : {});
  expect(res.status).toBe(200);
  return parseExposition(await res.text(), res.headers.get("content-type") ?? "");
}

async function scrapeAll(): Promise<Record<ServiceKey, Scrape>> {
  return Object.fromEntries(await Promise.all(SERVICE_KEYS.map(async (k) => [k, await scrape(k)] as const))) as Record<ServiceKey, Scrape>;
}

/** The sum of the samples named `name` whose labels include `labels`. */
function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  return s.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).reduce((sum, x) => sum + x.value, 0);
}

function delta(before: Record<ServiceKey, Scrape>, after: Record<ServiceKey, Scrape>, key: ServiceKey, name: string, labels: Record<string, string> = {}): number {
  return value(after[key], name, labels) - value(before[key], name, labels);
}

const rpcCount = (side: "server" | "client", method: string, code = "ok") => {
  const [service, name] = method.split("/");
  return ["mcsv_rpc_duration_seconds_count", { side, rpc_service: service!, rpc_method: name!, code }] as const;
};

/** The series names a family of this type puts on the wire in the classic text format. */
function seriesNames(family: string, type: string): string[] {
  if (type === "histogram") return [`${family}_bucket`, `${family}_sum`, `${family}_count`];
  if (type === "summary") return [family, `${family}_sum`, `${family}_count`];
  return [family];
}

// ---- logs -------------------------------------------------------------------------------------------------------

function logsOf(traceId: string) {
  return system.logs.filter((l) => l.json?.["trace_id"] === traceId);
}

// ---- the workflows ----------------------------------------------------------------------------------------------

/** Set by the workflows for the tests after them. */
const traces: { createUser?: string; convertImage?: string } = {};

test("CreateUser → welcome email → client callback is one trace across user, job, email and client, with metrics and logs to match", async () => {
  const since = receiver.spans.length;
  const before = await scrapeAll();
  const users = system.client(UserService, "user");
  const { user } = await users.createUser({ name: "Ada Lovelace", email: "ada@example.com", idempotencyKey: "obs-ada" });

  const spans = await traceOf("mcsv.v1.UserService/CreateUser", since, [["job", "job notify_client"]]);
  const traceId = spans[0]!.traceId;
  traces.createUser = traceId;

  // One trace: every span of the chain emitted since the call belongs to it.
  const chainNames = new Set(["mcsv.v1.UserService/CreateUser", "mcsv.v1.JobService/EnqueueJobs", "job send_email", "mcsv.v1.EmailService/SendEmail", "job notify_client", "mcsv.v1.ClientService/NotifyEmailSent"]);
  const chain = receiver.spans.slice(since).filter((s) => chainNames.has(s.name));
  expect(new Set(chain.map((s) => s.traceId))).toEqual(new Set([traceId]));
  expect(servicesIn(spans)).toEqual(["client-svc", "email-svc", "job-svc", "user-svc"]);
  for (const span of spans) expect(span.resource).toEqual(expect.objectContaining({ "service.name": span.service, "service.version": SERVICE_VERSION }));

  // The root is the gateway's server span; each RPC hop links CLIENT → SERVER; each job continues its enqueue.
  const root = only(spans, "user", "mcsv.v1.UserService/CreateUser", "server");
  expect(root.parentSpanId).toBe("");
  expectConnectHopsLinked(spans);
  expectJobContinuesEnqueue(spans, "send_email");
  const notify = expectJobContinuesEnqueue(spans, "notify_client");
  const callback = only(spans, "client", "mcsv.v1.ClientService/NotifyEmailSent", "server");
  expect(ancestors(callback)).toContain(notify);

  // Child spans: the gateway's Postgres transaction (user and outbox rows), the Resend call under the delivery.
  const sql = spans.filter((s) => s.service === "user-svc" && s.attributes["db.system.name"] === "postgresql");
  expect(sql.some((s) => String(s.attributes["db.query.text"]).includes("mcsv_user.outbox"))).toBe(true);
  expect(spans.some((s) => s.service === "job-svc" && s.attributes["db.system.name"] === "postgresql")).toBe(true);
  const resend = only(spans, "email", "POST /emails", "client");
  expect(resend.attributes).toEqual(expect.objectContaining({ "http.request.method": "POST", "http.response.status_code": 200, "peer.service": "resend" }));
  expect(parentOf(resend)?.name).toBe("email.deliver resend");
  expect(ancestors(resend)).toContainEqual(expect.objectContaining({ name: "mcsv.v1.EmailService/SendEmail", kind: "server" }));

  // Metrics moved by exactly this workflow.
  const after = await scrapeAll();
  expect(delta(before, after, "user", "mcsv_users_created_total")).toBe(1);
  expect(delta(before, after, "user", ...rpcCount("server", "mcsv.v1.UserService/CreateUser"))).toBe(1);
  expect(delta(before, after, "user", ...rpcCount("client", "mcsv.v1.JobService/EnqueueJobs"))).toBe(1);
  expect(delta(before, after, "job", ...rpcCount("server", "mcsv.v1.JobService/EnqueueJobs"))).toBe(1);
  expect(delta(before, after, "job", ...rpcCount("client", "mcsv.v1.EmailService/SendEmail"))).toBe(1);
  expect(delta(before, after, "email", ...rpcCount("server", "mcsv.v1.EmailService/SendEmail"))).toBe(1);
  expect(delta(before, after, "email", "mcsv_emails_total", { type: "welcome", outcome: "sent" })).toBe(1);
  expect(delta(before, after, "email", "mcsv_email_delivery_seconds_count", { type: "welcome", transport: "resend" })).toBe(1);
  expect(delta(before, after, "job", "mcsv_job_attempts_total", { task: "send_email", outcome: "completed" })).toBe(1);
  expect(delta(before, after, "job", "mcsv_job_attempts_total", { task: "notify_client", outcome: "completed" })).toBe(1);
  expect(delta(before, after, "job", "mcsv_job_duration_seconds_count", { task: "send_email", outcome: "completed" })).toBe(1);
  expect(delta(before, after, "client", "mcsv_client_events_total", { kind: "email_sent", result: "recorded" })).toBe(1);
  expect(value(after.job, "mcsv_queue_jobs", { task: "send_email", state: "completed" })).toBeGreaterThanOrEqual(1);
  // Labels stay low-cardinality: no ids, no addresses.
  for (const key of SERVICE_KEYS) expect(after[key].text).not.toMatch(new RegExp(`${user!.id}|ada@example\\.com`));

  // Logs written along the way carry the trace; job lines carry the job's fields, RPC lines the procedure.
  const lines = logsOf(traceId);
  expect([...new Set(lines.map((l) => l.service))].sort()).toEqual(expect.arrayContaining(["client", "email", "job"]));
  const spanIds = new Set(spans.map((s) => s.spanId));
  for (const line of lines) {
    expect(line.json).toEqual(expect.objectContaining({ timestamp: expect.any(String), level: expect.any(String), service: SERVICES[line.service].name, message: expect.any(String) }));
    expect(spanIds).toContain(line.json!["span_id"]);
  }
  const jobLine = lines.find((l) => l.service === "job" && l.json!["message"] === "email sent");
  expect(jobLine?.json).toEqual(expect.objectContaining({ task: "send_email", job_id: expect.any(String), attempt: 1 }));
  const emailLine = lines.find((l) => l.service === "email" && l.json!["message"] === "email sent");
  expect(emailLine?.json).toEqual(expect.objectContaining({ rpc: "mcsv.v1.EmailService/SendEmail", type: "welcome" }));
});

test("a job the outbox relays later (the job service was down) still continues the request's trace", async () => {
  const since = receiver.spans.length;
  await system.stopService("job");
  const users = system.client(UserService, "user");
  try {
    await users.createUser({ name: "Barbara Liskov", email: "barbara@example.com", idempotencyKey: "obs-barbara" });
  } finally {
    await system.startService("job");
  }
  // The relay's background loop delivers the row with the trace context stored beside it.
  const spans = await traceOf("mcsv.v1.UserService/CreateUser", since, [["client", "mcsv.v1.ClientService/NotifyEmailSent"]]);
  const enqueues = spans.filter((s) => s.service === "user-svc" && s.kind === "client" && s.name === "mcsv.v1.JobService/EnqueueJobs");
  // The attempt right after the commit failed (unavailable); a later one from the loop succeeded, in the same trace.
  expect(enqueues.map((s) => s.attributes["rpc.connect_rpc.error_code"] ?? "ok")).toEqual(expect.arrayContaining(["unavailable", "ok"]));
  const delivered = enqueues.find((s) => s.status.code !== 2)!;
  expect(parentOf(delivered)?.name).toBe("mcsv.v1.UserService/CreateUser");
  expect(spans.filter((s) => s.kind === CONNECT_SERVER && s.parentSpanId === delivered.spanId).map((s) => s.service)).toEqual(["job-svc"]);
  expectJobContinuesEnqueue(spans, "send_email");
});

test("ConvertImage → convert_image → ImageService → NotifyImageConverted → email → callbacks is one trace across all five services", async () => {
  const since = receiver.spans.length;
  const before = await scrapeAll();
  const users = system.client(UserService, "user");
  const png = await photoLikePng(48, 32);
  const { conversion } = await users.convertImage({
    userEmail: "grace@example.com",
    filename: "gradient.png",
    options: { quality: Quality.LOSSLESS },
    idempotencyKey: "obs-grace",
    source: { case: "imageData", value: png },
  });

  const spans = await traceOf("mcsv.v1.UserService/ConvertImage", since, [
    ["client", "mcsv.v1.ClientService/NotifyPdfReady"],
    ["client", "mcsv.v1.ClientService/NotifyEmailSent"],
    ["job", "job notify_client"],
  ]);
  const traceId = spans[0]!.traceId;
  traces.convertImage = traceId;
  // A server stream is one span too, ended with the stream (here: when the conversion reached its final state).
  const watchMark = receiver.spans.length;
  let final: ConversionState | undefined;
  for await (const update of users.watchConversion({ conversionId: conversion!.id })) final = update.conversion?.state;
  expect(final).toBe(ConversionState.SUCCEEDED);
  const watch = await eventually(() => receiver.spans.slice(watchMark).find((s) => s.name === "mcsv.v1.UserService/WatchConversion"), "the WatchConversion span");
  expect(watch).toEqual(expect.objectContaining({ service: "user-svc", kind: "server", status: { code: 0 } }));
  expect(watch.attributes).toEqual(expect.objectContaining({ "rpc.system": "connect_rpc", "rpc.method": "WatchConversion" }));

  const chainNames = new Set([
    "mcsv.v1.UserService/ConvertImage",
    "mcsv.v1.JobService/EnqueueJobs",
    "job convert_image",
    "mcsv.v1.ImageService/ConvertImage",
    "mcsv.v1.UserService/NotifyImageConverted",
    "job send_email",
    "mcsv.v1.EmailService/SendEmail",
    "job notify_client",
    "mcsv.v1.ClientService/NotifyPdfReady",
    "mcsv.v1.ClientService/NotifyEmailSent",
  ]);
  const chain = receiver.spans.slice(since).filter((s) => chainNames.has(s.name));
  expect(new Set(chain.map((s) => s.traceId))).toEqual(new Set([traceId]));
  expect(servicesIn(spans)).toEqual(["client-svc", "email-svc", "image-svc", "job-svc", "user-svc"]);
  expect(only(spans, "user", "mcsv.v1.UserService/ConvertImage", "server").parentSpanId).toBe("");
  expectConnectHopsLinked(spans);
  for (const task of ["convert_image", "send_email"]) expectJobContinuesEnqueue(spans, task);
  // The email job was enqueued by the gateway while it handled the SUCCEEDED report of the convert_image job.
  const emailJob = expectJobContinuesEnqueue(spans, "send_email");
  expect(ancestors(emailJob).map((s) => s.name)).toEqual(expect.arrayContaining(["mcsv.v1.UserService/NotifyImageConverted", "job convert_image", "mcsv.v1.UserService/ConvertImage"]));
  expect(ancestors(only(spans, "client", "mcsv.v1.ClientService/NotifyEmailSent", "server")).map((s) => s.name)).toContain("job send_email");

  // Inside the image service: the stages, the presigned fetch, each sharp step, ImageMagick, the upload to S3.
  const server = only(spans, "image", "mcsv.v1.ImageService/ConvertImage", "server");
  const stages = spans.filter((s) => s.parentSpanId === server.spanId).map((s) => s.name);
  expect(stages).toEqual(expect.arrayContaining(["image.fetch", "image.normalise", "image.pdf", "image.upload"]));
  const get = only(spans, "image", "GET", "client");
  expect(parentOf(get)?.name).toBe("image.fetch");
  expect(get.attributes).toEqual(expect.objectContaining({ "http.request.method": "GET", "http.response.status_code": 200, "http.response.body.size": png.byteLength, "url.path": expect.stringContaining("originals/") }));
  // A presigned URL's query string is its credential: it never reaches a span.
  expect(JSON.stringify(spans)).not.toMatch(/X-Amz-Signature|X-Amz-Credential/);
  for (const step of ["sharp.metadata", "sharp.pipeline"]) expect(parentOf(only(spans, "image", step))?.name).toBe("image.normalise");
  expect(only(spans, "image", "sharp.metadata").attributes).toEqual(expect.objectContaining({ "mcsv.image.format": "png", "mcsv.image.width": 48, "mcsv.image.height": 32 }));
  const magick = spans.find((s) => s.service === "image-svc" && s.name.startsWith("imagemagick "));
  expect(parentOf(magick!)?.name).toBe("image.pdf");
  expect(magick!.attributes).toEqual(
    expect.objectContaining({
      "process.executable.name": expect.stringMatching(/^(magick|convert)$/),
      "process.command_args": expect.arrayContaining(["-density", "pdf:-"]),
      "process.exit.code": 0,
      "process.pid": expect.any(Number),
      "mcsv.imagemagick.input_bytes": 48 * 32 * 3,
      "mcsv.imagemagick.output_bytes": expect.any(Number),
      "mcsv.imagemagick.duration_ms": expect.any(Number),
    }),
  );
  expect(magick!.attributes["mcsv.imagemagick.output_bytes"]).toBeGreaterThan(0);
  const upload = spans.find((s) => s.service === "image-svc" && s.name === "S3.PutObject");
  expect(upload?.attributes).toEqual(expect.objectContaining({ "rpc.system": "aws-api", "aws.s3.bucket": "mcsv", "http.response.status_code": 200 }));
  // The PDF is stored as ImageMagick writes it, within the pdf stage (a small one in one PUT).
  expect(parentOf(upload!)?.name).toBe("image.pdf");
  // The gateway stored the original in S3 and wrote its rows in Postgres, under its own server span.
  const gatewayChildren = spans.filter((s) => s.service === "user-svc" && ancestors(s).some((a) => a.name === "mcsv.v1.UserService/ConvertImage" && a.service === "user-svc"));
  expect(gatewayChildren.some((s) => s.name === "S3.PutObject")).toBe(true);
  expect(gatewayChildren.some((s) => s.attributes["db.system.name"] === "postgresql" && String(s.attributes["db.query.text"]).includes("mcsv_user.conversions"))).toBe(true);

  const after = await scrapeAll();
  expect(delta(before, after, "image", "mcsv_conversions_total", { outcome: "ok", quality: "lossless" })).toBe(1);
  for (const stage of ["fetch", "normalise", "pdf", "upload"]) expect(delta(before, after, "image", "mcsv_conversion_stage_duration_seconds_count", { stage })).toBe(1);
  expect(delta(before, after, "image", "mcsv_conversion_bytes_total", { direction: "in" })).toBe(png.byteLength);
  expect(delta(before, after, "image", "mcsv_conversion_bytes_total", { direction: "out" })).toBe(magick!.attributes["mcsv.imagemagick.output_bytes"]);
  expect(delta(before, after, "image", ...rpcCount("server", "mcsv.v1.ImageService/ConvertImage"))).toBe(1);
  expect(delta(before, after, "job", ...rpcCount("client", "mcsv.v1.ImageService/ConvertImage"))).toBe(1);
  expect(delta(before, after, "job", ...rpcCount("client", "mcsv.v1.UserService/NotifyImageConverted"))).toBe(1); // SUCCEEDED only: a quick conversion reports no PROCESSING
  expect(delta(before, after, "user", ...rpcCount("server", "mcsv.v1.UserService/NotifyImageConverted"))).toBe(1);
  expect(delta(before, after, "user", "mcsv_conversions_requested_total", { source: "inline" })).toBe(1);
  expect(delta(before, after, "user", ...rpcCount("server", "mcsv.v1.UserService/WatchConversion"))).toBe(1);
  expect(value(after.user, "mcsv_rpc_in_flight", { side: "server", rpc_method: "WatchConversion" })).toBe(0);
  expect(delta(before, after, "user", "mcsv_conversion_results_total", { state: "succeeded" })).toBe(1);
  expect(delta(before, after, "email", "mcsv_emails_total", { type: "conversion_complete", outcome: "sent" })).toBe(1);
  expect(delta(before, after, "job", "mcsv_job_attempts_total", { task: "convert_image", outcome: "completed" })).toBe(1);
  expect(delta(before, after, "client", "mcsv_client_events_total", { kind: "pdf_ready", result: "recorded" })).toBe(1);
  expect(delta(before, after, "client", "mcsv_client_events_total", { kind: "email_sent", result: "recorded" })).toBe(1);
  for (const key of SERVICE_KEYS) expect(after[key].text).not.toMatch(new RegExp(`${conversion!.id}|grace@example\\.com`));

  // The logs of all five services for this conversion carry its trace id.
  const lines = logsOf(traceId);
  expect([...new Set(lines.map((l) => l.service))].sort()).toEqual(["client", "email", "image", "job", "user"]);
  expect(lines.find((l) => l.service === "image" && l.json!["message"] === "image converted")?.json).toEqual(
    expect.objectContaining({ rpc: "mcsv.v1.ImageService/ConvertImage", conversion_id: conversion!.id, quality: "lossless" }),
  );
  expect(lines.find((l) => l.service === "job" && l.json!["message"] === "image converted")?.json).toEqual(expect.objectContaining({ task: "convert_image", attempt: 1 }));
});

test("OpenMetrics scrapes carry trace-id exemplars on the RPC histograms; the classic format none", async () => {
  const accept = "application/openmetrics-text; version=1.0.0";
  const om = await scrape("user", accept);
  expect(om.contentType).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
  expect(om.text.endsWith("# EOF\n")).toBe(true);
  const exemplars = om.samples.filter((s) => s.name === "mcsv_rpc_duration_seconds_bucket" && s.exemplar);
  expect(exemplars.length).toBeGreaterThan(0);
  // Each exemplar names a trace the collector received (the test's own last calls may still be in the batch).
  const received = (traceId: string | undefined) => eventually(() => (receiver.spans.some((s) => s.traceId === traceId) ? true : undefined), `trace ${traceId}`, 10_000);
  for (const sample of exemplars) {
    expect(Object.keys(sample.exemplar!.labels)).toEqual(["trace_id"]);
    await received(sample.exemplar!.labels["trace_id"]);
  }
  // The gateway's one ConvertImage so far: its exemplar is that workflow's trace.
  const convert = exemplars.filter((s) => s.labels["side"] === "server" && s.labels["rpc_method"] === "ConvertImage");
  expect(convert.map((s) => s.exemplar!.labels["trace_id"])).toEqual([traces.convertImage]);
  // Counters keep their _total in OpenMetrics samples and in the classic text, whichever was scraped first.
  expect(value(om, "mcsv_users_created_total")).toBeGreaterThanOrEqual(1);
  expect(om.types.get("mcsv_users_created")).toBe("counter");

  // Every service's histograms carry them (stage, email delivery and job durations too).
  const histograms: Array<[ServiceKey, string]> = [
    ["image", "mcsv_conversion_stage_duration_seconds_bucket"],
    ["email", "mcsv_email_delivery_seconds_bucket"],
    ["job", "mcsv_job_duration_seconds_bucket"],
    ["job", "mcsv_rpc_duration_seconds_bucket"],
    ["client", "mcsv_rpc_duration_seconds_bucket"],
  ];
  for (const [key, name] of histograms) {
    const samples = (await scrape(key, accept)).samples.filter((s) => s.name === name && s.exemplar);
    expect(samples.length).toBeGreaterThan(0);
    for (const sample of samples) await received(sample.exemplar!.labels["trace_id"]);
  }

  const classic = await scrape("user");
  expect(classic.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
  expect(classic.samples.some((s) => s.exemplar)).toBe(false);
  expect(classic.types.get("mcsv_users_created_total")).toBe("counter");
  expect(value(classic, "mcsv_users_created_total")).toBe(value(om, "mcsv_users_created_total"));
  // Prometheus' own Accept header (OpenMetrics first, text as a fallback) gets OpenMetrics.
  const prometheus = await scrape("user", "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2");
  expect(prometheus.contentType).toMatch(/^application\/openmetrics-text/);
});

test("a failing RPC is an error span on both sides, with the exception and the Connect code, in the workflow's trace", async () => {
  const since = receiver.spans.length;
  const users = system.client(UserService, "user");
  // A PNG whose pixel data is cut short: the gateway sniffs a PNG, the image service cannot decode it.
  const png = await photoLikePng(64, 64);
  const truncated = png.subarray(0, Math.floor(png.byteLength * 0.6));
  const { conversion } = await users.convertImage({ userEmail: "broken@example.com", filename: "broken.png", options: { quality: Quality.LOSSLESS }, idempotencyKey: "obs-broken", source: { case: "imageData", value: truncated } });
  await eventually(async () => ((await users.getConversion({ conversionId: conversion!.id })).conversion?.state === ConversionState.FAILED ? true : undefined), "the conversion to fail");

  const spans = await traceOf("mcsv.v1.UserService/ConvertImage", since, [["image", "mcsv.v1.ImageService/ConvertImage"]]);
  const server = spans.find((s) => s.service === "image-svc" && s.kind === "server" && s.name === "mcsv.v1.ImageService/ConvertImage")!;
  const client = parentOf(server)!;
  expect(client).toEqual(expect.objectContaining({ service: "job-svc", kind: "client", name: "mcsv.v1.ImageService/ConvertImage" }));
  for (const span of [server, client]) {
    expect(span.status.code).toBe(2);
    expect(span.attributes["rpc.connect_rpc.error_code"]).toBe("invalid_argument");
    const exception = span.events.find((e) => e.name === "exception");
    expect(exception?.attributes["exception.message"]).toMatch(/damaged or truncated/);
  }
  // The failing step inside the image service is marked too.
  expect(spans.find((s) => s.service === "image-svc" && s.name === "sharp.pipeline")?.status.code).toBe(2);
});

test("every answer names its trace (traceresponse): a success, an error and a server stream, each the gateway's server span", async () => {
  const since = receiver.spans.length;
  const users = system.client(UserService, "user");
  const seen: Record<string, string | null> = {};
  await users.createUser({ name: "Trace Me", email: "trace-me@example.com", idempotencyKey: "obs-traceresponse" }, { onHeader: (h) => (seen["success"] = h.get("traceresponse")) });
  const refused = await users.getConversion({ conversionId: "00000000-0000-4000-8000-000000000000" }).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(ConnectError);
  expect((refused as ConnectError).code).toBe(Code.NotFound);
  seen["error"] = (refused as ConnectError).metadata.get("traceresponse");
  const { conversion } = await users.convertImage({ userEmail: "trace-me@example.com", filename: "t.png", options: { quality: Quality.LOSSLESS }, idempotencyKey: "obs-traceresponse", source: { case: "imageData", value: await photoLikePng(8, 8) } });
  for await (const change of users.watchConversion({ conversionId: conversion!.id }, { onHeader: (h) => (seen["stream"] = h.get("traceresponse")) })) {
    if (change.conversion?.state === ConversionState.SUCCEEDED) break;
  }

  const rpcs = { success: "CreateUser", error: "GetConversion", stream: "WatchConversion" } as const;
  for (const [kind, method] of Object.entries(rpcs)) {
    const header = seen[kind];
    expect({ kind, header }).toEqual({ kind, header: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/) });
    const [, traceId, spanId] = header!.split("-");
    const span = await eventually(
      () => receiver.spans.slice(since).find((s) => s.traceId === traceId && s.spanId === spanId),
      `the span that the ${method} answer names`,
    );
    expect(span).toEqual(expect.objectContaining({ service: "user-svc", kind: "server", name: `mcsv.v1.UserService/${method}` }));
  }
});

test("every PromQL expression of the dashboards and alert rules names only metrics that the running services expose", async () => {
  const scrapes = await scrapeAll();
  const exposed = new Set<string>();
  for (const key of SERVICE_KEYS) {
    for (const [family, type] of scrapes[key].types) for (const name of seriesNames(family, type)) exposed.add(name);
  }
  // The families each service must expose, checked by their series names.
  const expected: Record<ServiceKey, string[]> = {
    user: ["mcsv_users_created_total", "mcsv_conversions_requested_total", "mcsv_conversion_results_total", "mcsv_outbox_deliveries_total", "mcsv_outbox_pending"],
    job: ["mcsv_queue_jobs", "mcsv_job_attempts_total", "mcsv_job_duration_seconds_bucket"],
    email: ["mcsv_emails_total", "mcsv_email_delivery_seconds_bucket"],
    image: ["mcsv_conversions_total", "mcsv_conversion_stage_duration_seconds_bucket", "mcsv_conversion_bytes_total"],
    client: ["mcsv_client_events_total"],
  };
  const common = ["mcsv_rpc_duration_seconds_bucket", "mcsv_rpc_duration_seconds_count", "mcsv_rpc_in_flight", "nodejs_eventloop_lag_seconds", "nodejs_heap_size_used_bytes", "nodejs_gc_duration_seconds_bucket", "process_cpu_seconds_total"];
  for (const key of SERVICE_KEYS) {
    const names = new Set([...scrapes[key].types].flatMap(([family, type]) => seriesNames(family, type)));
    expect({ service: key, missing: [...common, ...expected[key]].filter((n) => !names.has(n)) }).toEqual({ service: key, missing: [] });
    // Every series carries the service label.
    expect(scrapes[key].samples.every((s) => s.labels["service"] === SERVICES[key].name)).toBe(true);
  }

  const expressions = collectExpressions();
  expect(expressions.length).toBeGreaterThan(10);
  const unknown = expressions.flatMap((e) => metricNamesIn(e.expr).filter((name) => !exposed.has(name)).map((name) => `${e.file}: ${e.where}: ${name}`));
  expect(unknown).toEqual([]);
});

test("logs carry no secrets; the default http/protobuf export reaches the collector, and a stopping service flushes its spans", async () => {
  const raw = system.logs.map((l) => l.raw).join("\n");
  for (const secret of [TEST_API_KEY, TEST_INTERNAL_TOKEN, "re_test_key", "X-Amz-Signature"]) expect(raw).not.toContain(secret);

  // The client service again, with the protocol left to its default and a batch delay longer than the test: its
  // spans can only reach the collector through the flush on SIGTERM.
  delete system.env["OTEL_EXPORTER_OTLP_PROTOCOL"];
  system.env["OTEL_BSP_SCHEDULE_DELAY"] = "600000";
  await system.stopService("client");
  await system.startService("client");
  const mark = receiver.requests.length;
  // The other services still export JSON; everything else came from this one.
  const fromClient = () => receiver.requests.slice(mark).filter((r) => !r.contentType.startsWith("application/json"));
  await system.client(ClientService, "client").listEvents({ limit: 1 });
  expect(fromClient()).toEqual([]);
  await system.stopService("client");
  expect(fromClient().length).toBeGreaterThan(0);
  for (const request of fromClient()) expect(request).toEqual({ path: "/v1/traces", contentType: "application/x-protobuf", bytes: expect.any(Number) });
  expect(fromClient().every((r) => r.bytes > 0)).toBe(true);
});

test("every span name, service, span attribute, log label and log field that the docs' TraceQL and LogQL recipes use appears in this run's telemetry", async () => {
  // Runs after the workflows above: their spans (a failed RPC's included) and their log lines are in.
  const spanNames = new Set(receiver.spans.map((s) => s.name));
  const services = new Set(receiver.spans.map((s) => s.service));
  const spanAttributes = new Set(receiver.spans.flatMap((s) => Object.keys(s.attributes)));
  const logLines = system.logs.flatMap((l) => (l.json ? [l.json] : []));
  const logFields = new Set(logLines.flatMap((line) => Object.keys(line)));
  const logServices = new Set(logLines.map((line) => String(line["service"])));
  // Stream labels: Alloy promotes the fields service and level, and labels containers by compose service.
  const alloy = readFileSync(join(ROOT, "deploy/alloy/config.alloy"), "utf8");
  const streamLabels = new Set([...[...alloy.matchAll(/target_label\s*=\s*"(\w+)"/g)].map((m) => m[1]!), ...["service", "level"].filter((f) => logFields.has(f))]);

  const missing: string[] = [];
  for (const recipe of observabilityRecipes()) {
    const where = `${RECIPES_DOC}:${recipe.line}`;
    if (recipe.language === "traceql") {
      const names = traceqlNames(recipe.query);
      for (const name of names.spanNames) if (!spanNames.has(name)) missing.push(`${where} span name "${name}"`);
      for (const service of names.services) if (!services.has(service)) missing.push(`${where} service "${service}"`);
      for (const key of names.spanAttributes) if (!spanAttributes.has(key)) missing.push(`${where} span attribute ${key}`);
    } else {
      const names = logqlNames(recipe.query);
      for (const label of names.labels) if (!streamLabels.has(label)) missing.push(`${where} stream label ${label}`);
      for (const service of names.exactServices) if (!logServices.has(service)) missing.push(`${where} service "${service}"`);
      for (const field of names.fields) if (!logFields.has(field)) missing.push(`${where} log field ${field}`);
    }
  }
  expect(missing).toEqual([]);
  // The check sees what it claims to: a misspelt name would be reported.
  expect(spanNames.has("mcsv.v1.UserService/CreateUser") && !spanNames.has("mcsv.v1.UserService/CreateUsers")).toBe(true);
});
