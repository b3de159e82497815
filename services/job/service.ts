/**
 * Wires the job service: migrations (graphile-worker's schema, then the ledger), the ledger and its leases, the
 * clients of the services the tasks call, the in-process graphile-worker runner (the dispatcher), and JobService's
 * Connect routes.
 */
import { EventEmitter } from "node:events";
import { fileURLToPath } from "node:url";
import type { WorkerEvents } from "graphile-worker";
import { ClientService, EmailService, ImageService, JobService, UserService } from "@mcsv/sdk";
import { CallbackPolicy, systemResolver, type HostResolver } from "../shared/callback-policy.js";
import { createServiceClient } from "../shared/service-clients.js";
import { serverSettings, serviceUrl } from "../shared/config.js";
import { createPool, databaseCheck, databaseUnavailable, expectMigrated, migrate, type Pool } from "../shared/database.js";
import { describeError } from "../shared/errors.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { authPolicy } from "../shared/auth.js";
import { runService, type RunningService } from "../shared/server.js";
import { ObjectStore } from "../shared/storage.js";
import { SERVICES } from "../shared/topology.js";
import { jobWorkerPoolSize, type JobConfig } from "./config.js";
import { enqueueJob, enqueueJobs, type EnqueueInput } from "./enqueue.js";
import { createTaskList } from "./execution.js";
import { createJobHandlers } from "./handlers.js";
import { JobLedger } from "./ledger.js";
import { LeaseKeeper } from "./leases.js";
import { setQueueCountSource } from "./metrics.js";
import { createTaskDefinitions } from "./tasks/index.js";
import { gatewaySigningSecrets } from "./webhook-signing.js";
import { migrateGraphile, startWorker } from "./worker.js";

const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations", import.meta.url));
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export interface JobServiceOverrides {
  logger?: Logger;
  store?: ObjectStore;
  /** Resolves callback hosts (tests: there is no public DNS in the sandbox). */
  resolveHost?: HostResolver;
}

const JOB_SCHEMA = "mcsv_job";

/** Applies graphile-worker's migrations, then the ledger's (at start-up, or by the migrate command). */
export async function migrateJobDatabase(graphilePool: Pool, url: string, logger: Logger): Promise<void> {
  await migrateGraphile(graphilePool, logger);
  await migrate(url, { dir: MIGRATIONS_DIR, schema: JOB_SCHEMA, logger });
}

export async function startJobService(config: JobConfig, overrides: JobServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.job.name;
  initMetrics(name);
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });

  // What has started, stopped in reverse order: by the server's drain and close, or at once if start-up fails.
  const teardown = new Teardown();
  const pool = createPool(config.DATABASE_URL, logger, { max: config.DATABASE_POOL_MAX, name });
  // graphile-worker gets its own pool: a LISTEN connection plus one per running job, never starved by the API.
  const workerPool = createPool(config.DATABASE_URL, logger, { max: jobWorkerPoolSize(config), name: `${name}-worker` });
  teardown.onClose(() => Promise.all([pool.end(), workerPool.end()]).then(() => undefined));

  try {
    if (config.MIGRATE_ON_START) await migrateJobDatabase(workerPool, config.DATABASE_URL, logger);
    else await expectMigrated(config.DATABASE_URL, { dir: MIGRATIONS_DIR, schema: JOB_SCHEMA });
    const ledger = new JobLedger(pool);
    const enqueue = (input: EnqueueInput) => enqueueJob(ledger, input);
    const store = overrides.store ?? new ObjectStore(config);
    const clientOptions = { timeoutMs: config.RPC_TIMEOUT_MS, credential: config.MCSV_SERVICE_TOKEN, httpVersion: config.INTERNAL_HTTP_VERSION };
    const user = createServiceClient(UserService, serviceUrl(config, "user"), clientOptions);
    const definitions = createTaskDefinitions({
      email: createServiceClient(EmailService, serviceUrl(config, "email"), clientOptions),
      image: createServiceClient(ImageService, serviceUrl(config, "image"), { ...clientOptions, timeoutMs: config.CONVERT_TIMEOUT_MS }),
      user,
      client: createServiceClient(ClientService, serviceUrl(config, "client"), clientOptions),
      store,
      ledger,
      rpcTimeoutMs: config.RPC_TIMEOUT_MS,
      convertTimeoutMs: config.CONVERT_TIMEOUT_MS,
      processingReportMs: config.PROCESSING_REPORT_AFTER_MS,
      callbackTimeoutMs: config.CALLBACK_TIMEOUT_MS,
      callbacks: CallbackPolicy.fromConfig(config, overrides.resolveHost ?? systemResolver),
      signingSecrets: gatewaySigningSecrets(user, { cacheMs: config.WEBHOOK_SECRETS_CACHE_MS, rpcTimeoutMs: config.RPC_TIMEOUT_MS }),
      notificationPdfTtlSeconds: config.NOTIFICATION_PDF_URL_TTL_SECONDS,
      uploadMaxAgeMs: config.UPLOAD_RETENTION_HOURS * HOUR_MS,
      pdfMaxAgeMs: config.PDF_RETENTION_DAYS * DAY_MS,
      jobRetentionMs: config.JOB_RETENTION_DAYS * DAY_MS,
    });

    // Renews the leases of the attempts running here, beats for each worker pool graphile creates, and recovers
    // expired leases (of any replica).
    const leases = new LeaseKeeper(pool, ledger, logger, {
      heartbeatMs: config.JOB_WORKER_HEARTBEAT_MS,
      leaseMs: config.JOB_WORKER_DEAD_AFTER_MS,
      tasks: definitions,
    });
    const events = new EventEmitter() as WorkerEvents;
    events.on("pool:create", ({ workerPool }) => leases.register(workerPool.id));
    events.on("pool:release", ({ workerPool }) => {
      leases.unregister(workerPool.id).catch((error: unknown) => logger.debug("worker registration not removed", { error: describeError(error) }));
    });

    const worker = await startWorker({
      pool: workerPool,
      taskList: createTaskList(definitions, { ledger, leases, logger, enqueue }),
      logger,
      concurrency: config.JOB_CONCURRENCY,
      pollIntervalMs: config.JOB_POLL_INTERVAL_MS,
      localQueueSize: config.JOB_LOCAL_QUEUE_SIZE,
      completeBatchDelayMs: config.JOB_COMPLETE_BATCH_DELAY_MS,
      cron: config.JOB_CRON_ENABLED,
      // Running tasks are asked to give up a little before the grace period ends, so that they are released cleanly.
      abortAfterMs: Math.max(1_000, config.SHUTDOWN_GRACE_MS - 2_000),
      events,
    });
    // The leases stop after the worker: its last attempts still renew theirs while they finish.
    teardown.onDrain(() => leases.stop());
    teardown.onDrain(() => worker.stop(config.SHUTDOWN_GRACE_MS));
    await leases.start();

    setQueueCountSource(
      async () => (await ledger.counts()).map(({ task, state, count }) => ({ task, state, count })),
      (error) => logger.warn("queue gauge not updated", { error: describeError(error) }),
    );
    teardown.onClose(async () => setQueueCountSource(undefined));

    return await runService({
      name,
      port: config.JOB_PORT,
      ...serverSettings(config),
      logger,
      routes: (router) => router.service(JobService, createJobHandlers({ ledger, enqueue, enqueueMany: (inputs) => enqueueJobs(ledger, inputs) })),
      auth: authPolicy({ internal: config }),
      sharedDependencies: ["postgres"],
      readiness: { postgres: databaseCheck(pool) },
      dependencyErrors: databaseUnavailable,
      // Job arguments carry metadata and object keys, never file contents (nor links).
      readMaxBytes: 1024 * 1024,
      drain: () => teardown.drain(),
      close: () => teardown.close(),
    });
  } catch (error) {
    await teardown.drain();
    await teardown.close();
    throw error;
  }
}

/** Stop steps in two phases, each run in the reverse order of registration, each step once. */
class Teardown {
  private readonly draining: (() => Promise<unknown>)[] = [];
  private readonly closing: (() => Promise<unknown>)[] = [];

  /** Stops taking work and finishes what is in flight (the server's drain). */
  onDrain(step: () => Promise<unknown>): void {
    this.draining.push(step);
  }

  /** Releases resources once nothing runs any more (the server's close). */
  onClose(step: () => Promise<unknown>): void {
    this.closing.push(step);
  }

  drain(): Promise<void> {
    return Teardown.unwind(this.draining);
  }

  close(): Promise<void> {
    return Teardown.unwind(this.closing);
  }

  private static async unwind(steps: (() => Promise<unknown>)[]): Promise<void> {
    while (steps.length > 0) await steps.pop()!();
  }
}
