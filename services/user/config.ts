/** Configuration of the user service (the public gateway), validated once at start-up. */
import { z } from "zod";
import { apiKeysEnv } from "../shared/auth.js";
import { callbackEnv, commonEnv, databaseEnv, loadConfig, positiveInt, storageEnv, topologyEnv } from "../shared/config.js";
import { SERVICES } from "../shared/topology.js";

const MiB = 1024 * 1024;

export const userEnv = {
  /** Largest image accepted inline in ConvertImage, in bytes; bigger images go through CreateUploadUrl. */
  GATEWAY_MAX_IMAGE_BYTES: positiveInt(25 * MiB),
  /** Largest image accepted through CreateUploadUrl, in bytes. */
  UPLOAD_MAX_BYTES: positiveInt(100 * MiB),
  /** Lifetime of the PDF link in the conversion-complete email and client callback (SigV4 allows up to 7 days). */
  NOTIFICATION_PDF_URL_TTL_SECONDS: z.coerce.number().int().min(60).max(604_800).default(604_800),
  /** How often the outbox is polled for jobs whose enqueue failed and is due again. */
  OUTBOX_POLL_MS: positiveInt(1_000),
  /** Deadline of one EnqueueJob call. */
  JOB_CALL_TIMEOUT_MS: positiveInt(5_000),
  /** The gateway answers unavailable quickly when S3 is unreachable instead of holding the client. */
  S3_TIMEOUT_MS: positiveInt(5_000),
};

export function loadUserConfig(env: NodeJS.ProcessEnv = process.env) {
  return loadConfig(SERVICES.user.name, { ...commonEnv, ...databaseEnv, ...storageEnv, ...topologyEnv, ...apiKeysEnv, ...callbackEnv, ...userEnv }, env);
}

export type UserConfig = ReturnType<typeof loadUserConfig>;
