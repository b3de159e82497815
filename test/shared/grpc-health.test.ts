/**
 * gRPC health checking (services/shared/grpc/health.ts) on a real Connect server over h2c, called with the Connect
 * gRPC client and with a @grpc/grpc-js client: Check, List and Watch follow the source the server gives it.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "@mcsv/sdk";
import { healthRoutes, type HealthSource } from "../../services/shared/grpc/health.js";
import {
  Health,
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus as Status,
  HealthCheckResponseSchema,
  type HealthCheckResponse,
} from "../../services/shared/grpc/gen/grpc/health/v1/health_pb.js";
import { startH2cServer, type H2cServer } from "../support/h2c.js";
import { codec, grpc, grpcJsClient, unary } from "../support/grpc-js.js";

const INTERVAL_MS = 40;
let state: "serving" | "not_serving" | "failing" = "serving";
let reads = 0;
const source: HealthSource = async () => {
  reads++;
  if (state === "failing") throw new Error("postgres: connection refused");
  return state;
};

/** Retries an assertion until it holds (10 s at most). */
async function eventually(assertion: () => void): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return assertion();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(10);
    }
  }
}

let server: H2cServer;
let client: ReturnType<typeof createClient<typeof Health>>;

beforeAll(async () => {
  server = await startH2cServer(healthRoutes(source, { services: [UserService], intervalMs: INTERVAL_MS }));
  client = createClient(Health, createGrpcTransport({ baseUrl: server.baseUrl }));
});

afterAll(async () => {
  await server?.close();
});

beforeEach(() => {
  state = "serving";
});

test("Check follows the source, for the whole server and for the mounted service", async () => {
  for (const service of ["", "mcsv.v1.UserService"]) {
    state = "serving";
    expect((await client.check({ service })).status).toBe(Status.SERVING);
    state = "not_serving";
    expect((await client.check({ service })).status).toBe(Status.NOT_SERVING);
    state = "failing";
    expect((await client.check({ service })).status).toBe(Status.NOT_SERVING);
  }
});

test("Check of an unknown service is NOT_FOUND", async () => {
  const error = await client.check({ service: "mcsv.v1.NoSuchService" }).catch((e: unknown) => ConnectError.from(e));
  expect(error).toBeInstanceOf(ConnectError);
  expect((error as ConnectError).code).toBe(Code.NotFound);
});

test("List names the server and the mounted service", async () => {
  state = "not_serving";
  const { statuses } = await client.list({});
  expect(Object.fromEntries(Object.entries(statuses).map(([name, response]) => [name, response.status]))).toEqual({
    "": Status.NOT_SERVING,
    "mcsv.v1.UserService": Status.NOT_SERVING,
  });
});

/** Reads a Watch stream into an array as it arrives; stop() cancels it and resolves when the stream is over. */
function watch(service: string) {
  const abort = new AbortController();
  const received: Status[] = [];
  let ended = false;
  const done = (async () => {
    try {
      for await (const response of client.watch({ service }, { signal: abort.signal })) received.push(response.status);
    } catch (error) {
      if (ConnectError.from(error).code !== Code.Canceled) throw error;
    } finally {
      ended = true;
    }
  })();
  return {
    received,
    ended: () => ended,
    stop: async () => {
      abort.abort();
      await done;
    },
  };
}

test("Watch sends the status at once, then only its changes, until the caller goes", async () => {
  const stream = watch("");
  await eventually(() => expect(stream.received).toEqual([Status.SERVING]));
  await sleep(INTERVAL_MS * 5); // several polls of an unchanged status send nothing
  expect(stream.received).toEqual([Status.SERVING]);
  state = "not_serving";
  await eventually(() => expect(stream.received).toEqual([Status.SERVING, Status.NOT_SERVING]));
  state = "failing";
  await sleep(INTERVAL_MS * 3);
  state = "serving";
  await eventually(() => expect(stream.received).toEqual([Status.SERVING, Status.NOT_SERVING, Status.SERVING]));
  expect(stream.ended()).toBe(false);
  await stream.stop();
  // The server stopped polling for it.
  await sleep(INTERVAL_MS * 2);
  const after = reads;
  await sleep(INTERVAL_MS * 5);
  expect(reads).toBe(after);
});

test("Watch of an unknown service sends SERVICE_UNKNOWN and keeps the stream open", async () => {
  const stream = watch("mcsv.v1.NoSuchService");
  await eventually(() => expect(stream.received).toEqual([Status.SERVICE_UNKNOWN]));
  await sleep(INTERVAL_MS * 5);
  expect(stream.received).toEqual([Status.SERVICE_UNKNOWN]);
  expect(stream.ended()).toBe(false);
  await stream.stop();
});

test("many watchers share the reads of the source", async () => {
  const streams = Array.from({ length: 20 }, () => watch("mcsv.v1.UserService"));
  await eventually(() => expect(streams.every((s) => s.received.length === 1)).toBe(true));
  const before = reads;
  await sleep(INTERVAL_MS * 10);
  // Each watcher alone would read about 10 times; together they read about as often as one does.
  expect(reads - before).toBeLessThan(40);
  await Promise.all(streams.map((s) => s.stop()));
});

describe("a @grpc/grpc-js client", () => {
  let grpcClient: grpc.Client;
  beforeAll(() => {
    grpcClient = grpcJsClient(server.port);
  });
  afterAll(() => grpcClient.close());

  const check = (service: string) => unary(grpcClient, "/grpc.health.v1.Health/Check", HealthCheckRequestSchema, HealthCheckResponseSchema, { $typeName: "grpc.health.v1.HealthCheckRequest", service });

  test("Check: SERVING, NOT_SERVING, and NOT_FOUND (5) for an unknown service", async () => {
    expect((await check("")).status).toBe(Status.SERVING);
    state = "not_serving";
    expect((await check("mcsv.v1.UserService")).status).toBe(Status.NOT_SERVING);
    await expect(check("nope")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  test("Watch streams the changes", async () => {
    const request = codec(HealthCheckRequestSchema);
    const response = codec(HealthCheckResponseSchema);
    const call = grpcClient.makeServerStreamRequest("/grpc.health.v1.Health/Watch", request.serialize, response.deserialize, {
      $typeName: "grpc.health.v1.HealthCheckRequest",
      service: "",
    });
    const received: Status[] = [];
    call.on("data", (message: HealthCheckResponse) => received.push(message.status));
    const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.on("error", () => undefined); // the cancel below
    await eventually(() => expect(received).toEqual([Status.SERVING]));
    state = "not_serving";
    await eventually(() => expect(received).toEqual([Status.SERVING, Status.NOT_SERVING]));
    call.cancel();
    expect((await status).code).toBe(grpc.status.CANCELLED);
  });
});
