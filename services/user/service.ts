/**
 * The user service: the public gateway. Owns the mcsv_user schema (users, uploads, conversions, outbox), stores
 * originals in S3, hands work to the job service through the outbox, and streams conversion changes to watchers.
 */
import { fileURLToPath } from "node:url";
import type { JsonObject } from "@bufbuild/protobuf";
import { JobService, UserService } from "@mcsv/sdk";
import { createServiceClient } from "../shared/service-clients.js";
import { serverSettings, serviceUrl } from "../shared/config.js";
import { createPool, databaseCheck, databaseUnavailable, expectMigrated, migrate } from "../shared/database.js";
import { createLogger, type Logger } from "../shared/logger.js";
import { initMetrics } from "../shared/metrics.js";
import { runService, type PageHandler, type RunningService } from "../shared/server.js";
import { authPolicy } from "../shared/auth.js";
import { ObjectStore } from "../shared/storage.js";
import { SERVICES } from "../shared/topology.js";
import { withTraceContext } from "../shared/tracing.js";
import { CallbackPolicy, systemResolver, type HostResolver } from "../shared/callback-policy.js";
import type { UserConfig } from "./config.js";
import { createTenantKeyLookup } from "./api-keys.js";
import { ConversionChanges } from "./conversion-changes.js";
import { Conversions } from "./conversions.js";
import { consolePages } from "./console.js";
import { docsPages } from "./docs.js";
import { USER_PUBLIC_METHODS } from "./public-methods.js";
import { createUserHandlers } from "./handlers.js";
import { Originals } from "./originals.js";
import { OutboxRelay, typedTaskOfRow, type JobEnqueuer } from "./outbox.js";
import { TenantRateLimiter } from "./rate-limit.js";
import { Uploads } from "./uploads.js";
import { Users } from "./users.js";
import { WebhookSecrets } from "./webhook-secrets.js";
import { Retention } from "./retention.js";
import { conversionReader, WatchHub } from "./watch-hub.js";

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

export const USER_SCHEMA = "mcsv_user";
const MIGRATIONS_DIR = fileURLToPath(new URL("./migrations", import.meta.url));

export interface UserServiceOverrides {
  logger?: Logger;
  /** Resolves callback hosts (tests: there is no public DNS in the sandbox). */
  resolveHost?: HostResolver;
  /** Where the OpenAPI documents served under /docs/openapi/ live. */
  openapiDir?: string;
}

/** The first of `handlers` that handles the request. */
function anyPage(...handlers: PageHandler[]): PageHandler {
  return async (req, res, caller) => {
    for (const handler of handlers) if (await handler(req, res, caller)) return true;
    return false;
  };
}

/** Applies the gateway's migrations (at start-up, or by the migrate command). */
export function migrateUserDatabase(url: string, logger: Logger): Promise<void> {
  return migrate(url, { dir: MIGRATIONS_DIR, schema: USER_SCHEMA, logger });
}

export async function startUserService(config: UserConfig, overrides: UserServiceOverrides = {}): Promise<RunningService> {
  const name = SERVICES.user.name;
  const logger = overrides.logger ?? createLogger(name, { level: config.LOG_LEVEL, format: config.LOG_FORMAT });
  initMetrics(name);

  if (config.MIGRATE_ON_START) await migrateUserDatabase(config.DATABASE_URL, logger);
  else await expectMigrated(config.DATABASE_URL, { dir: MIGRATIONS_DIR, schema: USER_SCHEMA });
  const pool = createPool(config.DATABASE_URL, logger, { max: config.DATABASE_POOL_MAX, name });
  const store = new ObjectStore(config);
  const originals = new Originals(store, logger);

  const jobs = createServiceClient(JobService, serviceUrl(config, "job"), {
    timeoutMs: config.JOB_CALL_TIMEOUT_MS,
    credential: config.MCSV_SERVICE_TOKEN,
    httpVersion: config.INTERNAL_HTTP_VERSION,
  });
  // The typed payload; a row the current messages do not read exactly (a legacy shape) goes as the deprecated
  // task and args, which the job service upgrades (protobuf-es represents a google.protobuf.Struct as its JSON).
  // Each job continues the trace of the change that caused it. The call belongs to the first job's trace, and the
  // jobs of that trace continue the call's span; a job of another trace names its own.
  const enqueue: JobEnqueuer = async (batch) => {
    const callTrace = batch[0]?.traceContext?.["traceparent"];
    await withTraceContext(batch[0]?.traceContext, () => jobs.enqueueJobs({
      jobs: batch.map((job) => {
        const payload = typedTaskOfRow(job.task, job.args);
        const traceContext = job.traceContext && job.traceContext["traceparent"] !== callTrace ? job.traceContext : {};
        return payload ? { payload, jobKey: job.jobKey, traceContext } : { task: job.task, jobKey: job.jobKey, args: job.args as JsonObject, traceContext };
      }),
    }));
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
  const inlineImagesLimit = Math.ceil((config.GATEWAY_MAX_IMAGE_BYTES * 4) / 3) + 64 * 1024;
  const uploads = new Uploads(pool, originals);
  const users = new Users(pool, relay);
  const watches = new WatchHub(changes, conversionReader(pool), { maxPerTenant: config.TENANT_MAX_WATCHES });
  const conversions = new Conversions(pool, originals, uploads, relay, watches, logger, {
    maxInFlightPerTenant: config.TENANT_MAX_CONVERSIONS_IN_FLIGHT,
    maxImagePixels: config.GATEWAY_MAX_IMAGE_PIXELS,
    maxDocumentPages: config.DOCUMENT_MAX_PAGES,
    maxDocumentPixels: config.DOCUMENT_MAX_PIXELS,
    pdfRetentionMs: config.PDF_RETENTION_DAYS * DAY_MS,
    presignTtlSeconds: config.PRESIGN_TTL_SECONDS,
  });
  const handlers = createUserHandlers({
    users,
    uploads,
    conversions,
    callbacks: CallbackPolicy.fromConfig(config, overrides.resolveHost ?? systemResolver),
    limits: { maxImageBytes: config.GATEWAY_MAX_IMAGE_BYTES, uploadMaxBytes: config.UPLOAD_MAX_BYTES, maxDocumentPages: config.DOCUMENT_MAX_PAGES },
    rateLimit: new TenantRateLimiter({ perSecond: config.TENANT_RATE_PER_SECOND, burst: config.TENANT_RATE_BURST }),
    stopping: closing.signal,
    watchMaxSeconds: config.WATCH_MAX_SECONDS,
    webhookSecrets: new WebhookSecrets(pool, { graceMs: config.WEBHOOK_SECRET_GRACE_HOURS * HOUR_MS }),
  });
  const retention = new Retention(pool, logger, {
    conversionRetentionMs: config.CONVERSION_RETENTION_DAYS * DAY_MS,
    uploadRetentionMs: config.UPLOAD_RETENTION_HOURS * HOUR_MS,
    outboxRetentionMs: config.OUTBOX_RETENTION_DAYS * DAY_MS,
    intervalMs: config.RETENTION_INTERVAL_MS,
  });

  relay.start();
  retention.start();
  return runService({
    name,
    port: config.USER_PORT,
    ...serverSettings(config),
    logger,
    routes: (router) => router.service(UserService, handlers),
    // Tenants call the public methods with API keys; the job service reports through the internal ones.
    // Keys of MCSV_API_KEYS, and those kept in Postgres (`npm run keys`).
    auth: authPolicy({ internal: config, publicMethods: USER_PUBLIC_METHODS, apiKeys: config.MCSV_API_KEYS, lookupTenantKey: createTenantKeyLookup(pool) }),
    // Only ConvertImage and ConvertDocument carry images: as many bytes inline as one image's limit, base64 in a JSON
    // body (4/3 of its size), plus the rest of the message. Every other method keeps the small default.
    readLimits: { ConvertImage: inlineImagesLimit, ConvertDocument: inlineImagesLimit },
    pages: anyPage(docsPages(overrides.openapiDir), consolePages({ grafanaUrl: config.GRAFANA_URL, maxImageBytes: config.GATEWAY_MAX_IMAGE_BYTES })),
    dependencyErrors: databaseUnavailable,
    sharedDependencies: ["postgres", "s3", "conversion_listener"],
    readiness: {
      postgres: databaseCheck(pool),
      s3: () => store.ping(),
      // Without it watches would not hear of changes until it is back (it reconnects by itself).
      conversion_listener: async () => {
        if (!changes.listening) throw new Error("reconnecting to Postgres");
      },
    },
    drain: async () => {
      closing.abort();
      await Promise.all([relay.stop(), retention.stop()]);
    },
    close: async () => {
      await changes.close();
      await pool.end();
    },
  });
}
