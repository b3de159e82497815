/**
 * Readiness and shared dependencies (READINESS_COUNTS_SHARED): a dependency every replica shares (Postgres, S3) that
 * fails makes a process unready by default; where it must not take every replica out at once (Kubernetes), it is
 * still reported, and only the process's own trouble makes it unready. gRPC health follows the same answer.
 */
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { operatorPolicy } from "../support/credentials.js";

const logger = createLogger("readiness-test", { level: "error", format: "json" });
let postgresUp = false;
let ownTroubleFixed = true;
const started: RunningService[] = [];

async function serve(readinessCountsShared: boolean): Promise<RunningService> {
  const service = await runService({
    name: "readiness-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    routes: () => undefined,
    readiness: {
      postgres: async () => {
        if (!postgresUp) throw new Error("connect ECONNREFUSED 10.0.0.5:5432");
      },
      imagemagick: async () => {
        if (!ownTroubleFixed) throw new Error("the policy is not in force");
      },
    },
    sharedDependencies: ["postgres"],
    readinessCountsShared,
  });
  started.push(service);
  return service;
}

afterAll(async () => {
  await Promise.all(started.map((s) => s.shutdown("test over")));
});

const ready = async (service: RunningService) => {
  const res = await fetch(`${service.url}/health/ready`);
  return { status: res.status, body: (await res.json()) as { ready: boolean; checks: Record<string, string> } };
};

test("by default a failing shared dependency makes the process unready", async () => {
  const service = await serve(true);
  postgresUp = false;
  expect(await ready(service)).toEqual({ status: 503, body: expect.objectContaining({ ready: false, checks: { postgres: expect.stringContaining("ECONNREFUSED"), imagemagick: "ok" } }) });
  postgresUp = true;
  expect((await ready(service)).status).toBe(200);
});

test("with READINESS_COUNTS_SHARED=false it is reported but does not; the process's own trouble still does", async () => {
  const service = await serve(false);
  postgresUp = false;
  ownTroubleFixed = true;
  expect(await ready(service)).toEqual({ status: 200, body: expect.objectContaining({ ready: true, checks: { postgres: expect.stringContaining("ECONNREFUSED"), imagemagick: "ok" } }) });
  ownTroubleFixed = false;
  expect(await ready(service)).toEqual({ status: 503, body: expect.objectContaining({ ready: false, checks: expect.objectContaining({ imagemagick: "the policy is not in force" }) }) });
  ownTroubleFixed = true;
});
