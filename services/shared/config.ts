/**
 * Configuration comes from environment variables, validated once at start-up. A bad value stops the process with
 * one message that lists every problem, not just the first.
 */
import { readFileSync } from "node:fs";
import { z } from "zod";
import { internalAuthEnv } from "./auth.js";
import { productionProblems } from "./secrets.js";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "./topology.js";

export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Parses `env` with `shape`; empty variables count as unset. With NODE_ENV=production it also refuses missing,
 * placeholder and guessable secrets (secrets.ts), in the same one message.
 */
export function loadConfig<S extends z.ZodRawShape>(
  service: string,
  shape: S,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<z.ZodObject<S>> {
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ""));
  const result = z.object(shape).safeParse(set);
  const problems = result.success ? [] : result.error.issues.map((issue) => `${issue.path.join(".") || "environment"}: ${issue.message}`);
  if (set["NODE_ENV"] === "production") {
    const key = SERVICE_KEYS.find((k) => SERVICES[k].name === service);
    problems.push(...productionProblems(key, set, Object.keys(shape)));
  }
  if (problems.length > 0 || !result.success) {
    throw new ConfigError(`invalid configuration for ${service}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
  return result.data;
}

export const port = (fallback: number) => z.coerce.number().int().min(0).max(65_535).default(fallback);
export const positiveInt = (fallback: number) => z.coerce.number().int().positive().default(fallback);
export const boolean = (fallback: boolean) =>
  z
    .enum(["true", "false", "1", "0", "yes", "no"])
    .default(fallback ? "true" : "false")
    .transform((v) => v === "true" || v === "1" || v === "yes");
const httpUrl = z.url({ protocol: /^https?$/, error: "must be an http(s) URL" });
const commaList = z.string().transform((v) =>
  v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean),
);

/** Every service: logging, the shutdown grace period, request limits and the internal credentials (auth.ts). */
export const commonEnv = {
  /** production: secrets are checked (secrets.ts), /metrics and readiness details need the operator's credential. */
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  LOG_LEVEL: z.enum(["error", "warn", "info", "http", "verbose", "debug", "silly"]).default("info"),
  LOG_FORMAT: z.enum(["json", "pretty", "auto"]).default("auto"),
  SHUTDOWN_GRACE_MS: positiveInt(10_000),
  HOST: z.string().default("0.0.0.0"),
  /** Request bytes one process holds at once; unset means four times its largest request. */
  MAX_REQUEST_BYTES_IN_FLIGHT: z.coerce.number().int().positive().optional(),
  /** PEM files: with both, the port speaks TLS and ALPN chooses HTTP/2 or HTTP/1.1; without, HTTP/1.1 and h2c. */
  TLS_CERT_FILE: z.string().optional(),
  TLS_KEY_FILE: z.string().optional(),
  /**
   * Whether a failing shared dependency (Postgres, S3) makes the process unready. Off where a blip of one must not
   * take every replica out of its Service at once (Kubernetes): readiness still reports it, and stays 200.
   */
  READINESS_COUNTS_SHARED: boolean(true),
  /** gRPC server reflection needs a valid credential (of any kind) instead of being open. */
  REFLECTION_REQUIRES_CREDENTIAL: boolean(false),
  ...internalAuthEnv,
};

interface CommonConfig {
  NODE_ENV: string;
  READINESS_COUNTS_SHARED: boolean;
  MAX_REQUEST_BYTES_IN_FLIGHT?: number | undefined;
  HOST: string;
  SHUTDOWN_GRACE_MS: number;
  TLS_CERT_FILE?: string | undefined;
  TLS_KEY_FILE?: string | undefined;
  REFLECTION_REQUIRES_CREDENTIAL: boolean;
}

/** What runService takes from commonEnv (the TLS files read here, at start-up). */
export function serverSettings(config: CommonConfig) {
  if (Boolean(config.TLS_CERT_FILE) !== Boolean(config.TLS_KEY_FILE)) {
    throw new ConfigError("invalid configuration:\n  - TLS_CERT_FILE, TLS_KEY_FILE: set both (TLS) or neither (cleartext HTTP/1.1 and h2c)");
  }
  return {
    host: config.HOST,
    production: config.NODE_ENV === "production",
    shutdownGraceMs: config.SHUTDOWN_GRACE_MS,
    reflectionNeedsCredential: config.REFLECTION_REQUIRES_CREDENTIAL,
    readinessCountsShared: config.READINESS_COUNTS_SHARED,
    ...(config.MAX_REQUEST_BYTES_IN_FLIGHT ? { maxBytesInFlight: config.MAX_REQUEST_BYTES_IN_FLIGHT } : {}),
    ...(config.TLS_CERT_FILE && config.TLS_KEY_FILE ? { tls: { cert: readFileSync(config.TLS_CERT_FILE), key: readFileSync(config.TLS_KEY_FILE) } } : {}),
  };
}

const postgresUrl = z.url({ protocol: /^postgres(ql)?$/, error: "must be a postgres:// URL" });

export const databaseEnv = {
  DATABASE_URL: postgresUrl,
  DATABASE_POOL_MAX: positiveInt(10),
  /**
   * Whether the service applies its migrations when it starts (npm start, compose). Off where a pre-deploy job
   * applies them with its own role (Kubernetes): the service then only checks that they were applied.
   */
  MIGRATE_ON_START: boolean(true),
  /** The role that may change the schema, for the migrate command only; unset: DATABASE_URL. */
  MIGRATION_DATABASE_URL: postgresUrl.optional(),
};

export const storageEnv = {
  /** Unset means AWS S3 itself; set for MinIO, s3rver or any other S3-compatible server. */
  S3_ENDPOINT: httpUrl.optional(),
  /** Origin that presigned URLs handed to clients use, when it differs from S3_ENDPOINT (e.g. behind ingress). */
  S3_PUBLIC_ENDPOINT: httpUrl.optional(),
  S3_REGION: z.string().default("us-east-1"),
  S3_ACCESS_KEY_ID: z.string().optional(),
  S3_SECRET_ACCESS_KEY: z.string().optional(),
  S3_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "must be a valid S3 bucket name")
    .default("mcsv"),
  S3_TIMEOUT_MS: positiveInt(30_000),
  PRESIGN_TTL_SECONDS: z.coerce.number().int().min(60).max(604_800).default(900),
};

/** How services call each other: HTTP/1.1 keep-alive connections, or HTTP/2 (h2c on http URLs) sessions. */
export const internalCallsEnv = {
  INTERNAL_HTTP_VERSION: z.enum(["1.1", "2"]).default("1.1"),
};

/** `<SERVICE>_PORT` and `<SERVICE>_URL` for all five; a URL defaults to the local port of its service. */
export const topologyEnv = Object.fromEntries(
  SERVICE_KEYS.flatMap((key) => [
    [`${key.toUpperCase()}_PORT`, port(SERVICES[key].port)],
    [`${key.toUpperCase()}_URL`, httpUrl.optional()],
  ]),
) as Record<`${Uppercase<ServiceKey>}_PORT`, ReturnType<typeof port>> &
  Record<`${Uppercase<ServiceKey>}_URL`, z.ZodOptional<typeof httpUrl>>;

export type TopologyConfig = z.infer<z.ZodObject<typeof topologyEnv>>;

/** Where service `key` listens, as seen from its peers. */
export function serviceUrl(config: TopologyConfig, key: ServiceKey): string {
  const upper = key.toUpperCase() as Uppercase<ServiceKey>;
  return config[`${upper}_URL`] ?? `http://127.0.0.1:${config[`${upper}_PORT`]}`;
}

export const listFromEnv = commaList;

/**
 * One host name, optionally with a leading `*.` wildcard (one or more labels), or an IP address; either with a port
 * (`hooks.example.com:8443`, `[::1]:8443`), which that entry then allows instead of the scheme's default.
 */
const hostPattern =
  /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$|^[0-9a-f:.]+$/i;
const portInRange = (entry: string) => {
  const port = /\](?::(\d+))?$|^[^:]*:(\d+)$/.exec(entry);
  const digits = port?.[1] ?? port?.[2];
  return digits === undefined || (Number(digits) >= 1 && Number(digits) <= 65_535);
};

/** The callback allowlist: the gateway checks callback_url with it, the job service again before each POST. */
export const callbackEnv = {
  /**
   * Hosts a callback_url may name, comma-separated; `*.example.com` allows any subdomain of example.com. Empty
   * allows none. A host that resolves to a private, loopback or link-local address is refused unless it is listed
   * here by name (not through a wildcard). Only the scheme's default port (443, or 80 for http) is allowed unless an
   * entry names its port: `hooks.example.com:8443`.
   */
  CALLBACK_ALLOWED_HOSTS: commaList
    .default([])
    .pipe(
      z.array(
        z
          .string()
          .regex(hostPattern, "must be host names such as hooks.example.com, *.example.com or hooks.example.com:8443")
          .refine(portInRange, "ports must be between 1 and 65535"),
      ),
    )
    .transform((hosts) => hosts.map((host) => host.toLowerCase())),
  /** Accept plain http callback URLs; unset means yes, except with NODE_ENV=production (https only). */
  CALLBACK_ALLOW_HTTP: z
    .enum(["true", "false", "1", "0", "yes", "no"])
    .optional()
    .transform((v) => (v === undefined ? undefined : v === "true" || v === "1" || v === "yes")),
};

/** The limits of a document (ConvertDocument): the gateway refuses a larger one at once, the image service again. */
export const documentEnv = {
  /** Most pages (images) in one document. */
  DOCUMENT_MAX_PAGES: positiveInt(100),
  /** Most pixels (width × height) of all of a document's images together, read from their headers. */
  DOCUMENT_MAX_PIXELS: positiveInt(500_000_000),
};
