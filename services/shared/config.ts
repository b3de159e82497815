/**
 * Configuration comes from environment variables, validated once at start-up. A bad value stops the process with
 * one message that lists every problem, not just the first.
 */
import { z } from "zod";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "./topology.js";

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses `env` with `shape`; empty variables count as unset. */
export function loadConfig<S extends z.ZodRawShape>(
  service: string,
  shape: S,
  env: NodeJS.ProcessEnv = process.env,
): z.infer<z.ZodObject<S>> {
  const set = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ""));
  const result = z.object(shape).safeParse(set);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `  - ${issue.path.join(".") || "environment"}: ${issue.message}`);
    throw new ConfigError(`invalid configuration for ${service}:\n${problems.join("\n")}`);
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

/** Every service: logging, the shutdown grace period and the internal credential. */
export const commonEnv = {
  LOG_LEVEL: z.enum(["error", "warn", "info", "http", "verbose", "debug", "silly"]).default("info"),
  LOG_FORMAT: z.enum(["json", "pretty", "auto"]).default("auto"),
  SHUTDOWN_GRACE_MS: positiveInt(10_000),
  HOST: z.string().default("0.0.0.0"),
  /** The internal service credential: every internal RPC requires it, every service client sends it. */
  MCSV_INTERNAL_TOKEN: z.string().min(24, "must be at least 24 characters"),
};

export const databaseEnv = {
  DATABASE_URL: z.url({ protocol: /^postgres(ql)?$/, error: "must be a postgres:// URL" }),
  DATABASE_POOL_MAX: positiveInt(10),
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

/** One host name, optionally with a leading `*.` wildcard (one or more labels), or an IP address. */
const hostPattern = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$|^\[?[0-9a-f:.]+\]?$/i;

/** The callback allowlist: the gateway checks callback_url with it, the job service again before each POST. */
export const callbackEnv = {
  /**
   * Hosts a callback_url may name, comma-separated; `*.example.com` allows any subdomain of example.com. Empty
   * allows none. A host that resolves to a private, loopback or link-local address is refused unless it is listed
   * here by name (not through a wildcard).
   */
  CALLBACK_ALLOWED_HOSTS: commaList
    .default([])
    .pipe(z.array(z.string().regex(hostPattern, "must be host names such as hooks.example.com or *.example.com")))
    .transform((hosts) => hosts.map((host) => host.toLowerCase())),
};
