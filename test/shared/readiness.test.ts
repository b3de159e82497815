/**
 * Readiness and shared dependencies (READINESS_COUNTS_SHARED): a dependency every replica shares (Postgres, S3) that
 * fails makes a process unready by default; where it must not take every replica out at once (Kubernetes), it is
 * still reported, and only the process's own trouble makes it unready. gRPC health follows the same answer.
 * An optional feature's check (OCR) is always reported and never counted.
 */
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus as Status } from "../../services/shared/grpc/gen/grpc/health/v1/health_pb.js";
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService, type ServiceOptions } from "../../services/shared/server.js";
import { operatorPolicy } from "../support/credentials.js";

const logger = createLogger("readiness-test", { level: "error", format: "json" });
let postgresUp = false;
let ownTroubleFixed = true;
let ocrInstalled = false;
const started: RunningService[] = [];

async function serve(readinessCountsShared: boolean, extra: Partial<ServiceOptions> = {}): Promise<RunningService> {
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
      ...extra.readiness,
    },
    sharedDependencies: ["postgres"],
    readinessCountsShared,
    optionalDependencies: extra.optionalDependencies,
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

test("an optional dependency is reported, failing or not, but never makes the process unready, nor gRPC health NOT_SERVING", async () => {
  const service = await serve(true, {
    readiness: {
      ocr: async () => {
        if (!ocrInstalled) throw new Error("OCR is not available: ocrmypdf is not installed");
      },
    },
    optionalDependencies: ["ocr"],
  });
  const health = createClient(Health, createGrpcTransport({ baseUrl: service.url }));
  postgresUp = true;
  ownTroubleFixed = true;
  ocrInstalled = false;
  expect(await ready(service)).toEqual({ status: 200, body: expect.objectContaining({ ready: true, checks: { postgres: "ok", imagemagick: "ok", ocr: "OCR is not available: ocrmypdf is not installed" } }) });
  expect((await health.check({ service: "" })).status).toBe(Status.SERVING);
  ocrInstalled = true;
  expect(await ready(service)).toEqual({ status: 200, body: expect.objectContaining({ ready: true, checks: { postgres: "ok", imagemagick: "ok", ocr: "ok" } }) });
  // Counted checks still count beside it.
  ownTroubleFixed = false;
  expect((await ready(service)).status).toBe(503);
  expect((await health.check({ service: "" })).status).toBe(Status.NOT_SERVING);
  ownTroubleFixed = true;
});
