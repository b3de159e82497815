/**
 * Starts and supervises the whole system on one machine: embedded Postgres and S3 unless DATABASE_URL and
 * S3_ENDPOINT point at real ones, the dev email outbox unless RESEND_API_KEY is set, and the five services as
 * separate Node processes. Used by `npm start` and by the end-to-end tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { hexDigestOf } from "../../services/shared/auth.js";
import { SERVICES, SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { freePort, startEmbeddedPostgres, startEmbeddedS3, type EmbeddedPostgresHandle, type EmbeddedS3Handle } from "./embedded.js";

export const ROOT = resolve(import.meta.dirname ?? new URL(".", import.meta.url).pathname, "../..");

export interface SystemOptions {
  dataDir: string;
  /** Environment for every service (on top of process.env unless `isolated`). */
  env?: Record<string, string | undefined>;
  /** Do not inherit process.env (tests). */
  isolated?: boolean;
  ports?: Partial<Record<ServiceKey, number>>;
  /**
   * Processes per service (default 1), started together. The extra ones listen on free ports with the same
   * environment; the other services keep calling the first one's URL, as they would call a Kubernetes Service that
   * forwards to any replica. Extra job replicas work the shared queue in Postgres all the same.
   */
  replicas?: Partial<Record<ServiceKey, number>>;
  postgresPort?: number;
  s3Port?: number;
  /** Receives every line a service writes, with the number of the replica that wrote it. */
  onLine?: (service: ServiceKey, line: string, stream: "stdout" | "stderr", replica: number) => void;
  readyTimeoutMs?: number;
  /** Run the production build in this directory (relative to the repository) instead of the TypeScript sources. */
  build?: string;
  /** The operator's and the services' credentials (tests); by default MCSV_INTERNAL_TOKEN or the dev ones. */
  credentials?: { operatorToken?: string; serviceTokens?: Record<ServiceKey, string> };
}

export interface ServiceProcess {
  key: ServiceKey;
  /** 0 for the process at `urls[key]`, 1, 2, … for the extra replicas. */
  replica: number;
  url: string;
  child: ChildProcess;
  exited: Promise<number | null>;
}

export interface System {
  /** The environment every service got (its own MCSV_SERVICE_TOKEN aside). */
  env: Record<string, string>;
  /** The first API key and the operator's credential (which no service holds), for the banner and for tests. */
  credentials: { apiKey: string; operatorToken: string; serviceTokens: Record<ServiceKey, string> };
  urls: Record<ServiceKey, string>;
  postgres?: EmbeddedPostgresHandle;
  s3?: EmbeddedS3Handle;
  /** Replica 0 of each service. */
  services: Map<ServiceKey, ServiceProcess>;
  /** The extra replicas (`replicas` option), in start order. */
  replicas: ServiceProcess[];
  /** Starts (or starts again) replica 0 of one service and waits until it is ready. */
  startService(key: ServiceKey): Promise<ServiceProcess>;
  /** Sends `signal` to replica 0 and waits for it to exit. */
  stopService(key: ServiceKey, signal?: NodeJS.Signals): Promise<number | null>;
  /** Sends `signal` to one process (of `services` or `replicas`) and waits for it to exit. */
  stopProcess(proc: ServiceProcess, signal?: NodeJS.Signals): Promise<number | null>;
  waitReady(key: ServiceKey, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** A free port for each service (isolated systems: tests and the benchmark, beside anything already running). */
export async function freeServicePorts(): Promise<Record<ServiceKey, number>> {
  return Object.fromEntries(await Promise.all(SERVICE_KEYS.map(async (k) => [k, await freePort()] as const))) as Record<ServiceKey, number>;
}

export async function isReady(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(2_000) });
    await res.body?.cancel();
    return res.ok;
  } catch {
    return false;
  }
}

/**
 * The Node arguments that run one service from the repository root: its TypeScript through tsx, or, given the
 * directory of a production build (scripts/build.ts), its compiled JavaScript.
 */
export function serviceArguments(key: ServiceKey, build?: string): string[] {
  if (build) return ["--import", `./${join(build, "services", key, "telemetry.js")}`, join(build, "services", key, "main.js")];
  return [
    "--conditions=mcsv-source",
    "--import",
    "tsx",
    // The telemetry preload runs before anything else loads, so that its instrumentations hook pg and the AWS SDK.
    "--import",
    `./${join("services", key, "telemetry.ts")}`,
    join("services", key, "main.ts"),
  ];
}

export interface DevCredentials {
  /** The dev tenant's API key. */
  apiKey: string;
  /** The operator's credential (MCSV_INTERNAL_TOKEN): the CLI's job commands, curl, Prometheus. */
  internalToken: string;
  /** Each service's own credential, handed to that service only. */
  serviceTokens: Record<ServiceKey, string>;
}

const randomToken = () => randomBytes(32).toString("base64url");

/**
 * Dev credentials, made once and kept (readable by the owner only) in `<dataDir>/credentials.json`; what an older
 * file lacks is added.
 */
export function devCredentials(dataDir: string): DevCredentials {
  const file = join(dataDir, "credentials.json");
  const kept = (existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {}) as Partial<DevCredentials>;
  const credentials: DevCredentials = {
    apiKey: kept.apiKey ?? `mcsv_${randomBytes(24).toString("base64url")}`,
    internalToken: kept.internalToken ?? randomToken(),
    serviceTokens: Object.fromEntries(SERVICE_KEYS.map((key) => [key, kept.serviceTokens?.[key] ?? randomToken()])) as Record<ServiceKey, string>,
  };
  if (JSON.stringify(kept) !== JSON.stringify(credentials)) writeFileSync(file, `${JSON.stringify(credentials, null, 2)}\n`, { mode: 0o600 });
  return credentials;
}

/**
 * The credentials of a system: the environment's when it sets them, else the dev ones. Services get digests of the
 * operator's and of each other's credentials; the operator's credential itself is handed to none of them.
 */
function systemCredentials(env: Record<string, string>, dataDir: string, given: SystemOptions["credentials"] = {}): System["credentials"] {
  const dev = devCredentials(dataDir);
  env["MCSV_API_KEYS"] ??= `dev=${dev.apiKey}`;
  const operatorToken = env["MCSV_INTERNAL_TOKEN"] ?? given.operatorToken ?? dev.internalToken;
  const serviceTokens = given.serviceTokens ?? dev.serviceTokens;
  delete env["MCSV_INTERNAL_TOKEN"];
  // The digests always match the credentials handed out here.
  env["MCSV_OPERATOR_TOKEN_SHA256"] = hexDigestOf(operatorToken);
  env["MCSV_SERVICE_TOKEN_SHA256S"] = SERVICE_KEYS.map((key) => `${key}=${hexDigestOf(serviceTokens[key])}`).join(",");
  const firstKey = env["MCSV_API_KEYS"].split(",")[0]!;
  return { apiKey: firstKey.slice(firstKey.indexOf("=") + 1).trim(), operatorToken, serviceTokens };
}

export async function startSystem(options: SystemOptions): Promise<System> {
  const base: Record<string, string | undefined> = { ...(options.isolated ? { PATH: process.env["PATH"], HOME: process.env["HOME"] } : process.env), ...options.env };
  const env: Record<string, string> = Object.fromEntries(Object.entries(base).filter((e): e is [string, string] => e[1] !== undefined));
  mkdirSync(options.dataDir, { recursive: true });
  env["MCSV_DATA_DIR"] = options.dataDir;

  let postgres: EmbeddedPostgresHandle | undefined;
  let s3: EmbeddedS3Handle | undefined;
  if (!env["DATABASE_URL"]) {
    postgres = await startEmbeddedPostgres(join(options.dataDir, "pg"), options.postgresPort ?? 54329);
    env["DATABASE_URL"] = postgres.url;
  }
  if (!env["S3_ENDPOINT"]) {
    s3 = await startEmbeddedS3(join(options.dataDir, "s3"), options.s3Port ?? 9000, [env["S3_BUCKET"] ?? "mcsv"]);
    env["S3_ENDPOINT"] = s3.endpoint;
    env["S3_ACCESS_KEY_ID"] = s3.accessKeyId;
    env["S3_SECRET_ACCESS_KEY"] = s3.secretAccessKey;
  }
  if (!env["RESEND_API_KEY"]) env["EMAIL_OUTBOX_DIR"] ??= join(options.dataDir, "outbox");
  const credentials = systemCredentials(env, options.dataDir, options.credentials);

  const urls = {} as Record<ServiceKey, string>;
  for (const key of SERVICE_KEYS) {
    const upper = key.toUpperCase();
    const port = options.ports?.[key] ?? Number(env[`${upper}_PORT`] ?? SERVICES[key].port);
    env[`${upper}_PORT`] = String(port);
    urls[key] = env[`${upper}_URL`] ??= `http://127.0.0.1:${port}`;
  }

  const services = new Map<ServiceKey, ServiceProcess>();
  const replicas: ServiceProcess[] = [];

  function spawnProcess(key: ServiceKey, replica: number, own: Record<string, string> = {}): Pick<ServiceProcess, "child" | "exited"> {
    const child = spawn(process.execPath, serviceArguments(key, options.build), {
      cwd: ROOT,
      env: { ...env, MCSV_SERVICE_TOKEN: credentials.serviceTokens[key], ...own },
      stdio: ["ignore", "pipe", "pipe"],
    });
    for (const stream of ["stdout", "stderr"] as const) {
      createInterface({ input: child[stream]! }).on("line", (line) => options.onLine?.(key, line, stream, replica));
    }
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    return { child, exited };
  }

  function spawnService(key: ServiceKey): ServiceProcess {
    return { key, replica: 0, url: urls[key], ...spawnProcess(key, 0) };
  }

  async function spawnReplica(key: ServiceKey, replica: number): Promise<ServiceProcess> {
    const port = await freePort();
    return { key, replica, url: `http://127.0.0.1:${port}`, ...spawnProcess(key, replica, { [`${key.toUpperCase()}_PORT`]: String(port) }) };
  }

  async function waitProcessReady(proc: ServiceProcess, timeoutMs = options.readyTimeoutMs ?? 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const name = `${SERVICES[proc.key].name}${proc.replica > 0 ? ` replica ${proc.replica}` : ""}`;
    let exitCode: number | null | undefined;
    void proc.exited.then((code) => (exitCode = code));
    while (Date.now() < deadline) {
      if (exitCode !== undefined) throw new Error(`${name} exited with code ${exitCode} before it was ready`);
      if (await isReady(proc.url)) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`${name} was not ready within ${timeoutMs} ms`);
  }

  const waitReady = (key: ServiceKey, timeoutMs?: number) => waitProcessReady(services.get(key)!, timeoutMs);

  async function startService(key: ServiceKey): Promise<ServiceProcess> {
    const proc = spawnService(key);
    services.set(key, proc);
    await waitReady(key);
    return proc;
  }

  async function stopProcess(proc: ServiceProcess | undefined, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (!proc || proc.child.exitCode !== null || proc.child.signalCode !== null) return proc?.child.exitCode ?? null;
    proc.child.kill(signal);
    const killer = setTimeout(() => proc.child.kill("SIGKILL"), 30_000);
    const code = await proc.exited;
    clearTimeout(killer);
    return code;
  }

  const stopService = (key: ServiceKey, signal?: NodeJS.Signals) => stopProcess(services.get(key), signal);

  const system: System = {
    env,
    credentials,
    urls,
    services,
    replicas,
    startService,
    stopService,
    stopProcess,
    waitReady,
    async stop() {
      await Promise.all([...SERVICE_KEYS.map((key) => stopService(key)), ...replicas.map((proc) => stopProcess(proc))]);
      await s3?.stop();
      await postgres?.stop();
    },
  };
  if (postgres) system.postgres = postgres;
  if (s3) system.s3 = s3;

  try {
    for (const key of SERVICE_KEYS) {
      services.set(key, spawnService(key));
      for (let replica = 1; replica < (options.replicas?.[key] ?? 1); replica++) replicas.push(await spawnReplica(key, replica));
    }
    await Promise.all([...SERVICE_KEYS.map((key) => waitReady(key)), ...replicas.map((proc) => waitProcessReady(proc))]);
  } catch (error) {
    await system.stop();
    throw error;
  }
  return system;
}
