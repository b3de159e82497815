/**
 * The real system for end-to-end tests: embedded Postgres, s3rver, the five services as separate processes on
 * free ports, and Resend replaced by a local sink that the real resend SDK talks to. Every line the services log
 * is kept, parsed, for assertions.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import pg from "pg";
import type { ServiceKey } from "../../services/shared/topology.js";
import { freePort } from "../../scripts/lib/embedded.js";
import { freeServicePorts, startSystem, type System, type SystemOptions } from "../../scripts/lib/system.js";
import { gatewayAuth, internalAuth, TEST_API_KEY, TEST_INTERNAL_TOKEN, TEST_SERVICE_TOKENS, TEST_TENANT } from "./credentials.js";
import { startResendSink, type ResendSink } from "./resend-sink.js";

import { eventually } from "./eventually.js";

export { eventually };

/**
 * Resolves once the system has nothing left to do: no job queued (due or not) or running, and no outbox row waiting
 * for the job service, seen twice 100 ms apart. What is counted after it is final: no repeat is still on its way.
 */
export async function untilIdle(system: Pick<System, "env">, timeoutMs = 60_000): Promise<void> {
  const db = new pg.Client({ connectionString: system.env["DATABASE_URL"], application_name: "until-idle" });
  await db.connect();
  try {
    const busy = async () => {
      const { rows } = await db.query<{ jobs: string; outbox: string }>(
        `select (select count(*) from mcsv_job.jobs where state in ('queued', 'executing')) as jobs,
                (select count(*) from mcsv_user.outbox where sent_at is null and dead_at is null) as outbox`,
      );
      return Number(rows[0]!.jobs) + Number(rows[0]!.outbox);
    };
    await eventually(async () => {
      if ((await busy()) > 0) return undefined;
      await new Promise((r) => setTimeout(r, 100));
      return (await busy()) === 0 ? true : undefined;
    }, "the system to be idle (no job queued or running, no outbox row waiting)", timeoutMs);
  } finally {
    await db.end();
  }
}

export interface LogLine {
  service: ServiceKey;
  /** 0, or the extra replica (`replicas` option) that wrote the line. */
  replica: number;
  raw: string;
  json?: Record<string, unknown>;
}

export interface TestSystem extends System {
  sink: ResendSink;
  logs: LogLine[];
  dataDir: string;
  client<T extends DescService>(service: T, key: ServiceKey, options?: { json?: boolean }): Client<T>;
  /** Stops everything and removes the data directory. */
  close(): Promise<void>;
}

export async function startTestSystem(env: Record<string, string> = {}, options: Pick<SystemOptions, "replicas" | "build"> = {}): Promise<TestSystem> {
  const dataDir = mkdtempSync(join(tmpdir(), "mcsv-e2e-"));
  const sink = await startResendSink();
  const logs: LogLine[] = [];
  const ports = await freeServicePorts();
  let system: System;
  try {
    system = await startSystem({
      dataDir,
      isolated: true,
      ports,
      ...options,
      credentials: { operatorToken: TEST_INTERNAL_TOKEN, serviceTokens: TEST_SERVICE_TOKENS },
      postgresPort: await freePort(),
      s3Port: await freePort(),
      env: {
        RESEND_API_KEY: "re_test_key",
        RESEND_BASE_URL: sink.url,
        LOG_FORMAT: "json",
        MCSV_API_KEYS: `${TEST_TENANT}=${TEST_API_KEY}`,
        LOG_LEVEL: "info",
        ...env,
      },
      onLine: (service, raw, _stream, replica) => {
        let json: Record<string, unknown> | undefined;
        try {
          json = JSON.parse(raw) as Record<string, unknown>;
        } catch {
          json = undefined;
        }
        logs.push(json ? { service, replica, raw, json } : { service, replica, raw });
        if (process.env["MCSV_TEST_VERBOSE"]) console.log(`${service}${replica > 0 ? `#${replica}` : ""} | ${raw}`);
      },
    });
  } catch (error) {
    await sink.close();
    console.error(logs.map((l) => `${l.service} | ${l.raw}`).join("\n"));
    throw error;
  }
  return Object.assign(system, {
    sink,
    logs,
    dataDir,
    client<T extends DescService>(service: T, key: ServiceKey, options: { json?: boolean } = {}): Client<T> {
      return createClient(service, createConnectTransport({ baseUrl: system.urls[key], httpVersion: "1.1", useBinaryFormat: !options.json, interceptors: [key === "user" ? gatewayAuth : internalAuth] }));
    },
    async close() {
      await system.stop();
      await sink.close();
      rmSync(dataDir, { recursive: true, force: true });
    },
  });
}
