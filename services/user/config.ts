/** Configuration of the user service (the public gateway), validated once at start-up. */
import { z } from "zod";
import { apiKeysEnv, callerEnv } from "../shared/auth.js";
import { callbackEnv, commonEnv, databaseEnv, documentEnv, internalCallsEnv, loadConfig, positiveInt, storageEnv, topologyEnv } from "../shared/config.js";
import { SERVICES } from "../shared/topology.js";

const MiB = 1024 * 1024;

/** A positive number of hours or days; fractions allowed, so that tests can use a few seconds. */
const positiveNumber = (fallback: number) => z.coerce.number().positive().default(fallback);

export const userEnv = {
  /** Largest image accepted inline in ConvertImage, in bytes; bigger images go through CreateUploadUrl. */
  GATEWAY_MAX_IMAGE_BYTES: positiveInt(25 * MiB),
  /** Largest image accepted through CreateUploadUrl, in bytes. */
  UPLOAD_MAX_BYTES: positiveInt(100 * MiB),
  /** How often the outbox is polled for jobs whose enqueue failed and is due again. */
  OUTBOX_POLL_MS: positiveInt(1_000),
  /** Deadline of one EnqueueJob call. */
  JOB_CALL_TIMEOUT_MS: positiveInt(5_000),
  /** The gateway answers unavailable quickly when S3 is unreachable instead of holding the client. */
  S3_TIMEOUT_MS: positiveInt(5_000),
  /**
   * Largest image accepted, in pixels (width × height), read from its header before a conversion is accepted. The
   * image service enforces its own IMAGE_MAX_PIXELS (same default) again when it decodes.
   */
  GATEWAY_MAX_IMAGE_PIXELS: positiveInt(100_000_000),
  /**
   * Days a succeeded conversion's PDF is kept. The same variable as the job service's storage sweep, which deletes the
   * PDFs this old: the two must agree (one ConfigMap holds it), or links would be given to deleted PDFs.
   */
  PDF_RETENTION_DAYS: positiveNumber(7),
  /** Hours an upload row is kept (the same variable as the sweep of uploaded objects); a consumed one goes with its conversion. */
  UPLOAD_RETENTION_HOURS: positiveNumber(24),
  /** Days a conversion is kept after its last change (for a finished one, its end), then deleted. */
  CONVERSION_RETENTION_DAYS: positiveNumber(30),
  /** Days an outbox row is kept once delivered (or set aside as refused), then deleted. */
  OUTBOX_RETENTION_DAYS: positiveNumber(7),
  /** How often the retention prune runs. */
  RETENTION_INTERVAL_MS: positiveInt(3_600_000),
  /** WatchConversion streams one tenant may hold open at once in one gateway process. */
  TENANT_MAX_WATCHES: positiveInt(100),
  /** Longest WatchConversion stream; it then ends with deadline_exceeded and the client watches again. */
  WATCH_MAX_SECONDS: positiveInt(600),
  /**
   * Requests a second each tenant may sustain on the public RPCs, per gateway process (0: no limit), and the
   * burst it may make after a quiet spell.
   */
  TENANT_RATE_PER_SECOND: z.coerce.number().min(0).default(100),
  TENANT_RATE_BURST: positiveInt(200),
  /** Conversions one tenant may have queued or processing at once, across replicas (0: no cap). */
  TENANT_MAX_CONVERSIONS_IN_FLIGHT: z.coerce.number().int().min(0).default(100),
  /** Hours a rotated webhook signing secret keeps signing callbacks beside its successor (RotateWebhookSecret). */
  WEBHOOK_SECRET_GRACE_HOURS: positiveNumber(24),
  /** Grafana's base URL, for the console's links to a conversion's trace (Explore, Tempo); unset: no links. */
  GRAFANA_URL: z.url({ protocol: /^https?$/, error: "must be an http(s) URL" }).optional(),
};

/** Every variable the gateway reads (docs/configuration.md is checked against it). */
export const userEnvShape = { ...commonEnv, ...callerEnv, ...databaseEnv, ...storageEnv, ...topologyEnv, ...internalCallsEnv, ...apiKeysEnv, ...callbackEnv, ...documentEnv, ...userEnv };

export function loadUserConfig(env: NodeJS.ProcessEnv = process.env) {
  return loadConfig(SERVICES.user.name, userEnvShape, env);
}

export type UserConfig = ReturnType<typeof loadUserConfig>;

/** Postgres connections one gateway holds at most: its pool, and the one that listens for conversion changes. */
export function userPostgresConnections(config: Pick<UserConfig, "DATABASE_POOL_MAX">): number {
  return config.DATABASE_POOL_MAX + 1;
}
