/**
 * Helpers of the fault tests: the real system tuned for fast recovery, a gate in front of ImageMagick that keeps
 * conversions mid-flight on demand, and the checks every fault test ends with (nothing lost, nothing duplicated).
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { ConversionState, JobService, Quality, UserService, type Conversion, type Job } from "@mcsv/sdk";
import type { SystemOptions } from "../../scripts/lib/system.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { photoLikePng } from "../support/pdf.js";
import { eventually, startTestSystem, untilIdle, type TestSystem } from "../support/system.js";

export { eventually };

/**
 * Keeps ImageMagick from starting while held: each run first leaves a mark (so a test knows a conversion is inside
 * the image service's PDF stage), then waits until the hold is lifted (at most 60 s), then runs ImageMagick.
 */
export interface ImageMagickGate {
  /** IMAGEMAGICK_COMMAND for the image service. */
  command: string;
  hold(): void;
  release(): void;
  /** How many ImageMagick runs have started so far (the start-up probe's included). */
  started(): number;
}

export function imageMagickGate(dir: string): ImageMagickGate {
  mkdirSync(join(dir, "marks"), { recursive: true });
  const command = join(dir, "imagemagick-gate.sh");
  writeFileSync(
    command,
    `#!/bin/sh
touch "${dir}/marks/$$"
i=0
while [ -e "${dir}/hold" ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
if command -v magick >/dev/null 2>&1; then exec magick "$@"; fi
exec convert "$@"
`,
  );
  chmodSync(command, 0o755);
  return {
    command,
    hold: () => writeFileSync(join(dir, "hold"), ""),
    release: () => rmSync(join(dir, "hold"), { force: true }),
    started: () => (existsSync(join(dir, "marks")) ? readdirSync(join(dir, "marks")).length : 0),
  };
}

export interface ChaosSystem extends TestSystem {
  gate: ImageMagickGate;
  /** The bucket, as the services see it. */
  store: ObjectStore;
  /** Postgres, for reading the ledger and the worker registrations. */
  db: pg.Pool;
  users: Client<typeof UserService>;
  jobs: Client<typeof JobService>;
}

/** The system with short heartbeats and back-offs, so that recovery takes seconds; `env` adds to it. */
export async function startChaosSystem(env: Record<string, string> = {}, options: Pick<SystemOptions, "replicas"> = {}): Promise<ChaosSystem> {
  const gateDir = join(process.env["TMPDIR"] ?? "/tmp", `mcsv-chaos-gate-${process.pid}-${Date.now()}`);
  const gate = imageMagickGate(gateDir);
  const system = await startTestSystem({
    IMAGEMAGICK_COMMAND: gate.command,
    JOB_WORKER_HEARTBEAT_MS: "500",
    JOB_WORKER_DEAD_AFTER_MS: "3000",
    JOB_POLL_INTERVAL_MS: "500",
    JOB_CRON_ENABLED: "false",
    OUTBOX_POLL_MS: "500",
    SHUTDOWN_GRACE_MS: "5000",
    ...env,
  }, options);
  const store = new ObjectStore({
    S3_ENDPOINT: system.env["S3_ENDPOINT"],
    S3_REGION: "us-east-1",
    S3_ACCESS_KEY_ID: system.env["S3_ACCESS_KEY_ID"],
    S3_SECRET_ACCESS_KEY: system.env["S3_SECRET_ACCESS_KEY"],
    S3_BUCKET: "mcsv",
    S3_TIMEOUT_MS: 5_000,
    PRESIGN_TTL_SECONDS: 900,
  });
  const db = new pg.Pool({ connectionString: system.env["DATABASE_URL"], max: 2, application_name: "chaos-test" });
  // Postgres restarts in these tests; an idle client losing its connection must not fail the test process.
  db.on("error", () => undefined);
  const close = system.close.bind(system);
  return Object.assign(system, {
    gate,
    store,
    db,
    users: system.client(UserService, "user"),
    jobs: system.client(JobService, "job"),
    async close() {
      gate.release();
      await db.end().catch(() => undefined);
      store.client.destroy();
      await close();
      rmSync(gateDir, { recursive: true, force: true });
    },
  });
}

/** Waits until ImageMagick has started `count` more runs than `before`. */
export async function imageMagickStarted(system: ChaosSystem, before: number, count = 1): Promise<void> {
  await eventually(() => (system.gate.started() >= before + count ? true : undefined), `${count} ImageMagick run(s) to start`);
}

/** A small PNG, different for every `seed` (so that no two conversions share a digest). */
export async function smallPng(seed: number): Promise<Buffer> {
  return photoLikePng(16 + (seed % 16), 12 + (seed % 7));
}

export function convertRequest(png: Buffer, userEmail: string, idempotencyKey: string) {
  return {
    userEmail,
    filename: `${idempotencyKey}.png`,
    options: { quality: Quality.LOSSLESS },
    idempotencyKey,
    source: { case: "imageData" as const, value: png },
  };
}

/** Network errors as connect-node classifies them (node-error.ts). */
const NETWORK_CODES: Record<string, Code> = {
  ECONNREFUSED: Code.Unavailable,
  ETIMEDOUT: Code.Unavailable,
  ENOTFOUND: Code.Unavailable,
  EAI_AGAIN: Code.Unavailable,
  ECONNRESET: Code.Aborted,
};

/**
 * The Connect code a client sees for a failed call. connect-node turns a refused connection into unavailable, but
 * recognises Node's errors with `instanceof Error`, which fails under jest (its modules run in another realm than
 * Node's core), leaving `internal`: the cause chain is read here the way connect-node reads it outside jest.
 */
export function clientCode(error: unknown): Code {
  const connectError = ConnectError.from(error);
  if (connectError.code !== Code.Internal) return connectError.code;
  for (let cause: unknown = connectError.cause, depth = 0; cause && depth < 10; cause = (cause as { cause?: unknown }).cause, depth++) {
    const code = NETWORK_CODES[String((cause as { code?: unknown }).code)];
    if (code !== undefined) return code;
  }
  return connectError.code;
}

/** What a call came to: its value, or the Connect code a client sees and the message. */
export async function outcomeOf<T>(call: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; code: Code; message: string }> {
  try {
    return { ok: true, value: await call };
  } catch (error) {
    return { ok: false, code: clientCode(error), message: ConnectError.from(error).rawMessage };
  }
}

/** Waits until every conversion has succeeded, and returns them; a FAILED one fails the test with its error. */
export async function allSucceeded(system: ChaosSystem, ids: string[], timeoutMs = 90_000): Promise<Conversion[]> {
  const done = new Map<string, Conversion>();
  const failed = await eventually(
    async () => {
      for (const id of ids.filter((i) => !done.has(i))) {
        const { conversion } = await system.users.getConversion({ conversionId: id });
        if (conversion?.state === ConversionState.FAILED) return conversion;
        if (conversion?.state === ConversionState.SUCCEEDED) done.set(id, conversion);
      }
      return done.size === ids.length ? null : undefined;
    },
    `${ids.length} conversions to succeed`,
    timeoutMs,
  ).catch(async (error: unknown) => {
    // Say where each unfinished conversion stands, so that a failure on CI can be read without the logs.
    const stuck = await Promise.all(ids.filter((i) => !done.has(i)).map((id) => whereStands(system, id)));
    throw new Error(`${String(error)}; unfinished:\n${stuck.join("\n")}`);
  });
  if (failed) throw new Error(`conversion ${failed.id} failed: ${failed.error}`);
  return ids.map((id) => done.get(id)!);
}

/** A conversion's state and its convert_image job's, in one line. */
async function whereStands(system: ChaosSystem, conversionId: string): Promise<string> {
  try {
    const { conversion } = await system.users.getConversion({ conversionId });
    const { rows } = await system.db.query(
      `select id, state, dispatch, attempts, lease_owner, lease_expires_at, run_at, errors from mcsv_job.jobs where job_key = $1`,
      [`convert_image:${conversionId}`],
    );
    return `${conversionId}: ${ConversionState[conversion?.state ?? 0]}; job ${JSON.stringify(rows[0] ?? null)}`;
  } catch (error) {
    return `${conversionId}: not read (${String(error)})`;
  }
}

/** Every key under pdfs/ in the bucket. */
export async function pdfKeys(system: ChaosSystem): Promise<string[]> {
  const keys: string[] = [];
  for await (const object of system.store.list("pdfs/")) keys.push(object.key);
  return keys;
}

/** Emails delivered (unique deliveries, as Resend counts them) to `address`. */
export function emailsTo(system: ChaosSystem, address: string) {
  return system.sink.delivered().filter((e) => e.body.to.includes(address));
}

/**
 * Waits until each address got an email and the system is idle (no repeat still on its way), then checks that each
 * got exactly one, and that Resend never saw one idempotency key with two different emails (409). A crash may make
 * a job send again with the same idempotency key, which Resend (and the sink) answers without a second email.
 */
export async function exactlyOneEmailEach(system: ChaosSystem, addresses: string[], timeoutMs = 90_000): Promise<void> {
  await eventually(
    () => (addresses.every((a) => emailsTo(system, a).length > 0) ? true : undefined),
    `an email to each of ${addresses.length} addresses (missing: ${addresses.filter((a) => emailsTo(system, a).length === 0).slice(0, 5).join(", ")})`,
    timeoutMs,
  );
  await untilIdle(system, timeoutMs);
  const counts = addresses.map((a) => [a, emailsTo(system, a).length] as const).filter(([, n]) => n !== 1);
  expect(counts).toEqual([]);
  expect(system.sink.requests().filter((r) => r.status === 409)).toEqual([]);
}

/** Every job with this job key (listed newest first; the keyed ones are few). */
export async function jobByKey(system: ChaosSystem, task: string, jobKey: string): Promise<Job | undefined> {
  let pageToken = "";
  do {
    const page = await system.jobs.listJobs({ task, pageSize: 100, pageToken });
    const job = page.jobs.find((j) => j.jobKey === jobKey);
    if (job) return job;
    pageToken = page.nextPageToken;
  } while (pageToken);
  return undefined;
}

/** The status code of GET /health/ready (0 when the service does not answer). */
export async function readiness(url: string): Promise<number> {
  try {
    const res = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(5_000) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return 0;
  }
}
