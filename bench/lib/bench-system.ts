/**
 * The real system for benchmarks: scripts/lib/system.ts `startSystem` on its embedded defaults (embedded Postgres,
 * s3rver, the five services as their own processes) on free ports, the real resend SDK pointed at the local Resend
 * sink, and clients that authenticate as callers do. Also what the benchmarks read about the processes: CPU time per
 * component (the profile of where time goes), peak memory, and the services' own metrics.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ImageService, JobService, UserService } from "@mcsv/sdk";
import { freePort } from "../../scripts/lib/embedded.js";
import { freeServicePorts, startSystem, type System } from "../../scripts/lib/system.js";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { ObjectStore } from "../../services/shared/storage.js";
import { SERVICE_KEYS, type ServiceKey } from "../../services/shared/topology.js";
import { startResendSink, type ResendSink } from "../../test/support/resend-sink.js";
import { allProcesses, processTree, stat } from "./procfs.js";

export interface BenchSystem {
  system: System;
  sink: ResendSink;
  store: ObjectStore;
  users: Client<typeof UserService>;
  images: Client<typeof ImageService>;
  jobs: Client<typeof JobService>;
  internalToken: string;
  pid(key: ServiceKey): number;
  postgresPid(): number | undefined;
  /** Lines the services logged at level error or warn since start (the last 200 kept). */
  problems: string[];
  problemCount(): number;
  metrics(key: ServiceKey): Promise<string>;
  close(): Promise<void>;
}

export async function startBenchSystem(options: { imageMagickCommand: string; env?: Record<string, string>; onLine?: (service: ServiceKey, line: string) => void }): Promise<BenchSystem> {
  const dataDir = mkdtempSync(join(tmpdir(), "mcsv-bench-"));
  const sink = await startResendSink();
  const apiKey = `mcsv_${randomBytes(24).toString("base64url")}`;
  const internalToken = randomBytes(32).toString("base64url");
  const ports = await freeServicePorts();
  const problems: string[] = [];
  let problemCount = 0;
  let system: System;
  try {
    system = await startSystem({
      dataDir,
      isolated: true,
      ports,
      postgresPort: await freePort(),
      s3Port: await freePort(),
      env: {
        RESEND_API_KEY: "re_bench_key",
        RESEND_BASE_URL: sink.url,
        LOG_FORMAT: "json",
        MCSV_API_KEYS: apiKey,
        MCSV_INTERNAL_TOKEN: internalToken,
        IMAGEMAGICK_COMMAND: options.imageMagickCommand,
        // The hourly sweep and pruning must not land in the middle of a measurement.
        JOB_CRON_ENABLED: "false",
        // One tenant drives the whole load: its abuse limits would measure themselves.
        TENANT_RATE_PER_SECOND: "0",
        TENANT_MAX_CONVERSIONS_IN_FLIGHT: "0",
        // B2 watches every conversion it makes: hundreds at once at its highest loads.
        TENANT_MAX_WATCHES: "100000",
        ...options.env,
      },
      onLine: (service, line) => {
        options.onLine?.(service, line);
        if (/"level":"(error|warn)"/.test(line) || /^\s*(Error|TypeError)/.test(line)) {
          problemCount++;
          problems.push(`${service} | ${line.slice(0, 500)}`);
          if (problems.length > 200) problems.shift();
        }
      },
    });
  } catch (error) {
    await sink.close();
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }

  const client = <T extends DescService>(service: T, key: ServiceKey, secret: string): Client<T> =>
    createClient(service, createConnectTransport({ baseUrl: system.urls[key], httpVersion: "1.1", useBinaryFormat: true, interceptors: [bearerInterceptor(secret)] }));
  const store = new ObjectStore({
    S3_ENDPOINT: system.env["S3_ENDPOINT"],
    S3_REGION: "us-east-1",
    S3_ACCESS_KEY_ID: system.env["S3_ACCESS_KEY_ID"],
    S3_SECRET_ACCESS_KEY: system.env["S3_SECRET_ACCESS_KEY"],
    S3_BUCKET: system.env["S3_BUCKET"] ?? "mcsv",
    S3_TIMEOUT_MS: 60_000,
    PRESIGN_TTL_SECONDS: 3_600,
  });

  return {
    system,
    sink,
    store,
    users: client(UserService, "user", apiKey),
    images: client(ImageService, "image", internalToken),
    jobs: client(JobService, "job", internalToken),
    internalToken,
    pid(key) {
      const pid = system.services.get(key)?.child.pid;
      if (pid === undefined) throw new Error(`${key} has no process`);
      return pid;
    },
    postgresPid() {
      try {
        return Number(readFileSync(join(dataDir, "pg", "postmaster.pid"), "utf8").split("\n")[0]);
      } catch {
        return undefined;
      }
    },
    problems,
    problemCount: () => problemCount,
    async metrics(key) {
      const res = await fetch(`${system.urls[key]}/metrics`);
      return res.text();
    },
    async close() {
      store.client.destroy();
      await system.stop();
      await sink.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** CPU seconds used so far by each part of the system (and by the benchmark process, which hosts s3rver). */
export type CpuSnapshot = Record<string, number>;

export function cpuSnapshot(bench: BenchSystem): CpuSnapshot {
  const processes = allProcesses();
  const out: CpuSnapshot = {};
  for (const key of SERVICE_KEYS) {
    const s = processes.find((p) => p.pid === bench.pid(key));
    out[`${key}-svc`] = s?.cpu ?? 0;
    if (key === "image") out["imagemagick (service)"] = s?.childrenCpu ?? 0;
  }
  const pg = bench.postgresPid();
  out["postgres"] = pg ? processTree(pg, processes).reduce((sum, p) => sum + p.cpu + (p.pid === pg ? p.childrenCpu : 0), 0) : 0;
  const self = stat(process.pid);
  out["bench process (driver, s3rver, sink)"] = self?.cpu ?? 0;
  out["imagemagick (floor)"] = self?.childrenCpu ?? 0;
  return out;
}

/** CPU milliseconds per item between two snapshots, components that used none left out. */
export function cpuPerItem(before: CpuSnapshot, after: CpuSnapshot, items: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, value] of Object.entries(after)) {
    const ms = ((value - (before[key] ?? 0)) * 1000) / items;
    if (ms >= 0.05) out[key] = Math.round(ms * 10) / 10;
  }
  return out;
}

/** Server-side RPCs handled so far, by `Service/Method`, across every service (from their /metrics). */
export async function rpcCounts(bench: BenchSystem): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const key of SERVICE_KEYS) {
    const text = await bench.metrics(key);
    for (const match of text.matchAll(/^mcsv_rpc_duration_seconds_count\{([^}]*)\} ([0-9.eE+-]+)/gm)) {
      const labels = match[1]!;
      if (!labels.includes('side="server"')) continue;
      const service = /rpc_service="mcsv\.v1\.([^"]+)"/.exec(labels)?.[1];
      const method = /rpc_method="([^"]+)"/.exec(labels)?.[1];
      if (!service || !method) continue;
      const name = `${service}/${method}`;
      out.set(name, (out.get(name) ?? 0) + Number(match[2]));
    }
  }
  return out;
}

/** Sum and count of a histogram, per value of one label, from a Prometheus text scrape. */
export function histogramTotals(text: string, name: string, label: string): Map<string, { sum: number; count: number }> {
  const out = new Map<string, { sum: number; count: number }>();
  const pattern = new RegExp(`^${name}_(sum|count)\\{([^}]*)\\} ([0-9.eE+-]+)`, "gm");
  for (const match of text.matchAll(pattern)) {
    const value = new RegExp(`${label}="([^"]*)"`).exec(match[2]!)?.[1];
    if (value === undefined) continue;
    const entry = out.get(value) ?? { sum: 0, count: 0 };
    entry[match[1] as "sum" | "count"] += Number(match[3]);
    out.set(value, entry);
  }
  return out;
}
