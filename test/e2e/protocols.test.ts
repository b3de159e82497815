/**
 * Clients in any language reach the real processes: gRPC-Web over HTTP/1.1 (browsers), a real gRPC client
 * (@grpc/grpc-js over h2c) with and without its credential, traced alike, and gRPC health following readiness:
 * SERVING, then NOT_SERVING while Postgres is stopped. The services here call each other over HTTP/2
 * (INTERNAL_HTTP_VERSION=2; every other end-to-end test uses the default, HTTP/1.1), and both workflows complete.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";
import { ConversionState, CreateUserRequestSchema, CreateUserResponseSchema, GetQueueStatsRequestSchema, GetQueueStatsResponseSchema, UserService } from "@mcsv/sdk";
import { bearerInterceptor } from "../../services/shared/auth.js";
import { HealthCheckRequestSchema, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "../../services/shared/grpc/gen/grpc/health/v1/health_pb.js";
import { TEST_API_KEY, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { startOtlpReceiver, type OtlpReceiver } from "../support/otlp-receiver.js";
import { grpc, grpcJsClient, unary } from "../support/grpc-js.js";
import { photoLikePng } from "../support/pdf.js";
import { eventually, startTestSystem, type TestSystem } from "../support/system.js";

let system: TestSystem;
let receiver: OtlpReceiver;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  system = await startTestSystem({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_BSP_SCHEDULE_DELAY: "100", INTERNAL_HTTP_VERSION: "2" });
}, 120_000);

afterAll(async () => {
  for (const client of clients) client.close();
  await system?.close();
  await receiver?.close();
});

/** The gateway's server span of one RPC whose traceparent named `traceId`. */
function serverSpan(traceId: string, method: string) {
  return receiver.spans.find((s) => s.traceId === traceId && s.service === "user-svc" && s.kind === "server" && s.name === `mcsv.v1.UserService/${method}`);
}

function grpcJs(key: "user" | "job"): grpc.Client {
  const client = grpcJsClient(Number(new URL(system.urls[key]).port));
  clients.push(client);
  return client;
}

function bearer(secret: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${secret}`);
  return metadata;
}

async function grpcCode(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 0;
  } catch (error) {
    return (error as { code: number }).code;
  }
}

test("gRPC-Web over HTTP/1.1, as a browser sends it, with the same authentication", async () => {
  const transport = createGrpcWebTransport({ baseUrl: system.urls.user, httpVersion: "1.1" });
  const users = createClient(UserService, transport);
  const { user } = await createClient(UserService, createGrpcWebTransport({ baseUrl: system.urls.user, httpVersion: "1.1", interceptors: [bearerInterceptor(TEST_API_KEY)] })).createUser({
    name: "Grace",
    email: "grace@example.com",
  });
  expect(user?.email).toBe("grace@example.com");
  const refused = await users.getUser({ id: user!.id }).then(
    () => undefined,
    (error: unknown) => ConnectError.from(error).code,
  );
  expect(refused).toBe(Code.Unauthenticated);
});

test("a real gRPC client (grpc-js) calls with its credential and is refused without it", async () => {
  const users = grpcJs("user");
  const request = create(CreateUserRequestSchema, { name: "Barbara", email: "barbara@example.com" });
  const { user } = await unary(users, "/mcsv.v1.UserService/CreateUser", CreateUserRequestSchema, CreateUserResponseSchema, request, bearer(TEST_API_KEY));
  expect(user?.name).toBe("Barbara");
  expect(await grpcCode(unary(users, "/mcsv.v1.UserService/CreateUser", CreateUserRequestSchema, CreateUserResponseSchema, request))).toBe(grpc.status.UNAUTHENTICATED);
  expect(await grpcCode(unary(users, "/mcsv.v1.UserService/CreateUser", CreateUserRequestSchema, CreateUserResponseSchema, request, bearer("not-a-key-0123456789abcdefghij")))).toBe(grpc.status.UNAUTHENTICATED);
  // The same name again in the tenant: the service's own refusal, in gRPC's terms.
  expect(await grpcCode(unary(users, "/mcsv.v1.UserService/CreateUser", CreateUserRequestSchema, CreateUserResponseSchema, create(CreateUserRequestSchema, { name: "B", email: "barbara@example.com" }), bearer(TEST_API_KEY)))).toBe(grpc.status.ALREADY_EXISTS);

  const jobs = grpcJs("job");
  const stats = await unary(jobs, "/mcsv.v1.JobService/GetQueueStats", GetQueueStatsRequestSchema, GetQueueStatsResponseSchema, create(GetQueueStatsRequestSchema), bearer(TEST_INTERNAL_TOKEN));
  expect(stats.$typeName).toBe("mcsv.v1.GetQueueStatsResponse");
  expect(await grpcCode(unary(jobs, "/mcsv.v1.JobService/GetQueueStats", GetQueueStatsRequestSchema, GetQueueStatsResponseSchema, create(GetQueueStatsRequestSchema), bearer(TEST_API_KEY)))).toBe(grpc.status.UNAUTHENTICATED);
});

test("each protocol is traced alike: the caller's traceparent continues into the gateway's server span", async () => {
  const traceIds = { grpc: "4bf92f3577b34da6a3ce929d0e0e4736", grpcWeb: "5bf92f3577b34da6a3ce929d0e0e4737" };
  const users = grpcJs("user");
  const metadata = bearer(TEST_API_KEY);
  metadata.set("traceparent", `00-${traceIds.grpc}-00f067aa0ba902b7-01`);
  await unary(users, "/mcsv.v1.UserService/CreateUser", CreateUserRequestSchema, CreateUserResponseSchema, create(CreateUserRequestSchema, { name: "Traced", email: "traced-grpc@example.com" }), metadata);
  await createClient(UserService, createGrpcWebTransport({ baseUrl: system.urls.user, httpVersion: "1.1", interceptors: [bearerInterceptor(TEST_API_KEY)] })).createUser(
    { name: "Traced", email: "traced-grpc-web@example.com" },
    { headers: { traceparent: `00-${traceIds.grpcWeb}-00f067aa0ba902b7-01` } },
  );
  for (const traceId of Object.values(traceIds)) {
    const span = await eventually(() => serverSpan(traceId, "CreateUser"), `the server span of trace ${traceId}`, 15_000);
    expect(span.parentSpanId).toBe("00f067aa0ba902b7");
  }
});

test("with internal calls over HTTP/2, a sign-up gets its welcome e-mail and a conversion its PDF", async () => {
  const users = system.client(UserService, "user");
  await users.createUser({ name: "Hedy", email: "hedy@example.com" });
  const { conversion } = await users.convertImage({ userEmail: "hedy@example.com", filename: "h2.png", source: { case: "imageData", value: await photoLikePng(24, 16) } });
  await eventually(async () => ((await users.getConversion({ conversionId: conversion!.id })).conversion?.state === ConversionState.SUCCEEDED ? true : undefined), "the conversion", 60_000);
  await eventually(() => (system.sink.delivered().filter((e) => e.body.to.includes("hedy@example.com")).length === 2 ? true : undefined), "the welcome and the conversion e-mails", 30_000);
});

test("gRPC health follows readiness: SERVING, NOT_SERVING while Postgres is stopped", async () => {
  const check = (client: grpc.Client, service = "") =>
    unary(client, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, create(HealthCheckRequestSchema, { service })).then((r) => Status[r.status]);
  const user = grpcJs("user");
  const job = grpcJs("job");
  // No credential needed: probes have none.
  expect(await check(user)).toBe("SERVING");
  expect(await check(user, "mcsv.v1.UserService")).toBe("SERVING");
  expect(await check(job)).toBe("SERVING");
  expect(await grpcCode(check(user, "mcsv.v1.NoSuchService"))).toBe(grpc.status.NOT_FOUND);

  await system.postgres!.stop();
  await eventually(async () => ((await check(user)) === "NOT_SERVING" ? true : undefined), "the gateway NOT_SERVING", 15_000);
  await eventually(async () => ((await check(job)) === "NOT_SERVING" ? true : undefined), "the job service NOT_SERVING", 15_000);
  // The services are alive all along, and readiness agrees.
  expect((await fetch(`${system.urls.user}/health`)).status).toBe(200);
  expect((await fetch(`${system.urls.user}/health/ready`)).status).toBe(503);
}, 60_000);
