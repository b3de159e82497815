/**
 * The user service: the public gateway. Owns the mcsv_user schema (users, uploads, conversions, outbox), stores
 * originals in S3, hands work to the job service through the outbox, and streams conversion changes to watchers.
 */
import { fileURLToPath } from "node:url";
import type { JsonObject } from "@bufbuild/protobuf";
import { JobService, UserService } from "@mcsv/sdk";
import { createServiceClient } from "../shared/clients.js";
import { serviceUrl } from "../shared/config.js";
import { createPool, databaseCheck, migrate } from "../shared/database.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { runService, type RunningService } from "../shared/server.js";
import { publicWithInternal } from "../shared/auth.js";
import { ObjectStore } from "../shared/storage.js";
import { SERVICES } from "../shared/topology.js";
import { withTraceContext } from "../shared/tracing.js";
import { CallbackPolicy, systemResolver, type HostResolver } from "../shared/callback-policy.js";
import type { UserConfig } from "./config.js";
import { ConversionChanges } from "./conversion-changes.js";
import { Conversions } from "./conversions.js";
import { docsPages } from "./docs.js";
import { createUserHandlers } from "./handlers.js";
import { Originals } from "./originals.js";
import { OutboxRelay, type JobEnqueuer } from "./outbox.js";
import { Uploads } from "./uploads.js";
import { Users } from "./users.js";

export const USER_SCHEMA = "mcsv_user";
const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations", import.meta.url));

export interface UserServiceOverrides {
  logger?: Logger;
  /** Resolves callback hosts (tests: there is no public DNS in the sandbox). */
  resolveHost?: HostResolver;
  /** Where the OpenAPI documents served under /docs/openapi/ live. */
  openapiDir?: string;
}

export async function startUserService(config: UserConfig, overrides: UserServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.user.name;
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  initMetrics(name);

  await migrate(config.DATABASE_URL, { dir: MIGRATIONS_DIR, schema: USER_SCHEMA, logger });
  const pool = createPool(config.DATABASE_URL, logger, { max: config.DATABASE_POOL_MAX, name });
  const store = new ObjectStore(config);
  const originals = new Originals(store, logger);

  const jobs = createServiceClient(JobService, serviceUrl(config, "job"), {
    timeoutMs: config.JOB_CALL_TIMEOUT_MS,
    internalToken: config.MCSV_INTERNAL_TOKEN,
  });
  // protobuf-es represents a google.protobuf.Struct field as its JSON object.
  const enqueue: JobEnqueuer = async (job) => {
    await withTraceContext(job.traceContext, () =>
      jobs.enqueueJob({ task: job.task, jobKey: job.jobKey, args: job.args as JsonObject }),
    );
  };
  const relay = new OutboxRelay(pool, enqueue, logger, { pollMs: config.OUTBOX_POLL_MS });
  const changes = new ConversionChanges(config.DATABASE_URL, logger);
  try {
    await changes.start();
  } catch (error) {
    await pool.end().catch(() => undefined);
    throw error;
  }

  const closing = new AbortController();
  const uploads = new Uploads(pool, originals);
  const users = new Users(pool, relay);
  const conversions = new Conversions(pool, originals, uploads, relay, changes, logger, {
    notificationPdfTtlSeconds: config.NOTIFICATION_PDF_URL_TTL_SECONDS,
  });
  const handlers = createUserHandlers({
    users,
    uploads,
    conversions,
    callbacks: new CallbackPolicy(config.CALLBACK_ALLOWED_HOSTS, overrides.resolveHost ?? systemResolver),
    limits: { maxImageBytes: config.GATEWAY_MAX_IMAGE_BYTES, uploadMaxBytes: config.UPLOAD_MAX_BYTES },
    stopping: closing.signal,
  });

  relay.start();
  return runService({
    name,
    port: config.USER_PORT,
    host: config.HOST,
    logger,
    routes: (router) => router.service(UserService, handlers),
    // The job service reports results through NotifyImageConverted; users call everything else.
    auth: publicWithInternal(config.MCSV_API_KEYS, config.MCSV_INTERNAL_TOKEN, ["NotifyImageConverted"]),
    // The largest inline image, base64 in a JSON body (4/3 of its size), plus the rest of the message.
    readMaxBytes: Math.ceil((config.GATEWAY_MAX_IMAGE_BYTES * 4) / 3) + 1024 * 1024,
    pages: docsPages(overrides.openapiDir),
    readiness: {
      postgres: databaseCheck(pool),
      s3: () => store.ping(),
      // Without it watches would not hear of changes until it is back (it reconnects by itself).
      conversion_listener: async () => {
        if (!changes.listening) throw new Error("reconnecting to Postgres");
      },
    },
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    drain: async () => {
      closing.abort();
      await relay.stop();
    },
    close: async () => {
      await changes.close();
      await pool.end();
    },
  });
}
