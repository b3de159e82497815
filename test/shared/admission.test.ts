/**
 * Authentication before parsing (admission.ts), on a real server: a refused request is answered in its own
 * protocol without its body being read or parsed, per-method read limits bound what a body may inflate to, the
 * process's byte budget refuses what it cannot hold, and in production /metrics and readiness details need the
 * operator's credential.
 */
import { request as httpRequest } from "node:http";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ClientService, ListEventsRequestSchema, UserService } from "@mcsv/sdk";
import { ByteBudget, presentedCredential } from "../../services/shared/admission.js";
import { authPolicy, hexDigestOf, principalOf, type Principal } from "../../services/shared/auth.js";
import { createLogger } from "../../services/shared/logger.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { internalAuth, operatorPolicy, TEST_API_KEY, TEST_INTERNAL_TOKEN, TEST_SERVICE_TOKENS } from "../support/credentials.js";

const logger = createLogger("admission-test", { level: "error", format: "json" });
let server: RunningService;
let production: RunningService;
/** Handler calls, so that a test can tell that a refused request never reached one. */
const handled: Principal[] = [];
const bearer = { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` };

const routes = (router: Parameters<Parameters<typeof runService>[0]["routes"]>[0]) => {
  router.service(ClientService, {
    listEvents: (_request, ctx) => {
      handled.push(principalOf(ctx)!);
      return { events: [] };
    },
  });
  router.service(UserService, {
    getUser: () => ({}),
    async *watchConversion() {
      yield {};
    },
  });
};

beforeAll(async () => {
  server = await runService({
    name: "admission-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    routes,
    // ListEvents may take a large body, GetUser only the small default; the budget holds one large body.
    readLimits: { ListEvents: 8 * 1024 * 1024 },
    maxBytesInFlight: 8 * 1024 * 1024,
  });
  production = await runService({
    name: "admission-production-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    routes,
    production: true,
    readiness: {
      postgres: async () => {
        throw new Error("connect ECONNREFUSED 10.1.2.3:5432");
      },
    },
  });
});

afterAll(async () => {
  await server?.shutdown("test over");
  await production?.shutdown("test over");
});

/** A JSON body whose only field inflates to `bytes` (an unknown field: parsing it would be invalid_argument). */
function inflating(bytes: number): Buffer {
  return Buffer.from(JSON.stringify({ filler: "A".repeat(bytes) }));
}

async function post(path: string, headers: Record<string, string>, body: Uint8Array) {
  const res = await fetch(`${server.url}${path}`, { method: "POST", headers, body });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

test("a request without a valid credential is refused before its body is read: a bomb costs nothing", async () => {
  const bomb = brotliCompressSync(inflating(64 * 1024 * 1024));
  expect(bomb.byteLength).toBeLessThan(1_000);
  const before = process.memoryUsage().rss;
  for (const authorization of [undefined, "Bearer not-the-right-credential-0123456789"]) {
    const answer = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/json", "content-encoding": "br", ...(authorization ? { authorization } : {}) }, bomb);
    expect(answer.status).toBe(401);
    expect(JSON.parse(answer.text)).toEqual({ code: "unauthenticated", message: authorization ? "invalid credentials" : "missing credentials: send Authorization: Bearer <key>" });
  }
  // Decompressing it would have allocated 64 MiB (and parsing it failed with invalid_argument, not 401).
  expect(process.memoryUsage().rss - before).toBeLessThan(32 * 1024 * 1024);
  expect(handled).toEqual([]);
});

test("the refusal speaks each protocol: Connect unary (JSON, binary, GET), Connect streaming and gRPC-Web", async () => {
  const garbage = Uint8Array.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]);
  const binary = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/proto" }, garbage);
  expect([binary.status, JSON.parse(binary.text).code]).toEqual([401, "unauthenticated"]);

  const get = await fetch(`${server.url}/mcsv.v1.UserService/GetUser?connect=v1&encoding=json&compression=gzip&base64=1&message=${gzipSync(inflating(1024)).toString("base64url")}`);
  expect([get.status, ((await get.json()) as { code: string }).code]).toEqual([401, "unauthenticated"]);

  const grpcWeb = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "grpc-encoding": "gzip" }, garbage);
  expect(grpcWeb.status).toBe(200);
  expect(grpcWeb.headers.get("grpc-status") ?? /grpc-status:\s*(\d+)/.exec(grpcWeb.text)?.[1]).toBe(String(Code.Unauthenticated));

  const stream = await fetch(`${server.url}/mcsv.v1.UserService/WatchConversion`, { method: "POST", headers: { "content-type": "application/connect+json" }, body: garbage });
  const text = Buffer.from(await stream.arrayBuffer()).subarray(5).toString();
  expect([stream.status, JSON.parse(text).error.code]).toEqual([200, "unauthenticated"]);
  expect(handled).toEqual([]);
});

// Inflation beyond a method's limit is tested on the real gateway (test/e2e/trust.test.ts): under jest, zlib's errors
// come from another realm, and connect-node, which tells them apart with instanceof, answers internal instead.
test("each method has its own read limit", async () => {
  const body = inflating(1024 * 1024);
  const small = await post("/mcsv.v1.UserService/GetUser", { "content-type": "application/json", ...bearer }, body);
  expect(JSON.parse(small.text)).toMatchObject({ code: "resource_exhausted", message: expect.stringMatching(/262144/) });
  // The same body fits ListEvents' larger limit, so it is parsed (and its unknown field refused).
  const large = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/json", ...bearer }, body);
  expect(JSON.parse(large.text)).toMatchObject({ code: "invalid_argument" });
  const ok = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/proto", ...bearer }, toBinary(ListEventsRequestSchema, create(ListEventsRequestSchema, { limit: 1 })));
  expect(ok.status).toBe(200);
  expect(handled).toEqual([{ kind: "operator" }]);
});

/** One authenticated request that declares 7 MiB and sends it slowly: it holds that much of the 8 MiB budget until destroyed. */
async function holdSevenMiB() {
  const slow = httpRequest(`${server.url}/mcsv.v1.ClientService/ListEvents`, {
    method: "POST",
    headers: { "content-type": "application/proto", "content-length": String(7 * 1024 * 1024), ...bearer },
  });
  slow.on("error", () => undefined);
  slow.write(Buffer.alloc(1024));
  await new Promise((resolve) => setTimeout(resolve, 200));
  return slow;
}

test("a request the process cannot hold now gets resource_exhausted with a retry hint, before it is read", async () => {
  const slow = await holdSevenMiB();
  try {
    const refused = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/proto", ...bearer, "content-length": String(2 * 1024 * 1024) }, new Uint8Array(2 * 1024 * 1024));
    expect(refused.status).toBe(429);
    expect(JSON.parse(refused.text)).toMatchObject({ code: "resource_exhausted" });
    expect(refused.headers.get("retry-after")).toBe("1");
    // A small one still fits.
    const fits = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/proto", ...bearer }, new Uint8Array(0));
    expect(fits.status).toBe(200);
  } finally {
    slow.destroy();
  }
  // Released when the slow request ended: a large one fits again.
  await new Promise((resolve) => setTimeout(resolve, 100));
  const again = await post("/mcsv.v1.ClientService/ListEvents", { "content-type": "application/proto", ...bearer }, new Uint8Array(0));
  expect(again.status).toBe(200);
});

test("the other services' requests have a budget of their own: a burst of public uploads does not refuse them", async () => {
  const gateway = await runService({
    name: "admission-budgets-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: authPolicy({
      internal: { MCSV_SERVICE_TOKEN_SHA256S: { job: hexDigestOf(TEST_SERVICE_TOKENS.job) } },
      publicMethods: ["GetUser"],
      apiKeys: [{ tenant: "acme", key: TEST_API_KEY }],
    }),
    routes: (router) => router.service(UserService, { getUser: () => ({}), notifyImageConverted: () => ({}) }),
    readLimits: { GetUser: 8 * 1024 * 1024, NotifyImageConverted: 4 * 1024 * 1024 },
    maxBytesInFlight: 8 * 1024 * 1024,
  });
  const send = (method: string, credential: string, bytes: number) =>
    fetch(`${gateway.url}/mcsv.v1.UserService/${method}`, {
      method: "POST",
      headers: { "content-type": "application/proto", authorization: `Bearer ${credential}` },
      body: new Uint8Array(bytes),
    }).then(async (res) => ({ status: res.status, code: ((await res.json()) as { code?: string }).code }));
  // A tenant's slow 7 MiB upload holds most of the public budget.
  const slow = httpRequest(`${gateway.url}/mcsv.v1.UserService/GetUser`, {
    method: "POST",
    headers: { "content-type": "application/proto", "content-length": String(7 * 1024 * 1024), authorization: `Bearer ${TEST_API_KEY}` },
  });
  slow.on("error", () => undefined);
  slow.write(Buffer.alloc(1024));
  await new Promise((resolve) => setTimeout(resolve, 200));
  try {
    expect(await send("GetUser", TEST_API_KEY, 2 * 1024 * 1024)).toEqual({ status: 429, code: "resource_exhausted" });
    // The job service's report of the same size is admitted (and its zero bytes then refused as a message).
    const report = await send("NotifyImageConverted", TEST_SERVICE_TOKENS.job, 2 * 1024 * 1024);
    expect(report.code).not.toBe("resource_exhausted");
    expect(report.status).not.toBe(429);
  } finally {
    slow.destroy();
    await gateway.shutdown("test over");
  }
});

test("a body in chunks of unknown total is budgeted as it arrives: many small ones pass, one too large is refused", async () => {
  const send = (bytes: number) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest(`${server.url}/mcsv.v1.ClientService/ListEvents`, { method: "POST", headers: { "content-type": "application/proto", ...bearer } }, (res) => {
        let body = "";
        res.on("data", (chunk: Buffer) => (body += chunk.toString()));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      // No content-length: node sends it chunked.
      for (let sent = 0; sent < bytes; sent += 64 * 1024) req.write(Buffer.alloc(Math.min(64 * 1024, bytes - sent)));
      req.end();
    });
  // Sixteen 1 MiB bodies in turn, four at a time: never more than 4 MiB held of the 8 MiB budget.
  for (let round = 0; round < 4; round++) {
    const answers = await Promise.all(Array.from({ length: 4 }, () => send(1024 * 1024)));
    for (const answer of answers) expect(JSON.parse(answer.body)).toMatchObject({ code: "invalid_argument" });
  }
  // More than the whole budget: refused as the bytes arrive.
  const tooLarge = await send(8 * 1024 * 1024 + 64 * 1024);
  expect(JSON.parse(tooLarge.body)).toMatchObject({ code: "resource_exhausted", message: expect.stringMatching(/too many request bytes at once; retry in 1 s/) });
});

test("a call refused mid-body leaves its connection usable: connect-node's next call on it is answered", async () => {
  // connect-node's HTTP/1.1 client sends headers first and the body in chunks, on keep-alive connections. A refusal
  // answered before the body has arrived must still read the rest, or the connection stalls with the next call on it.
  const client = createClient(ClientService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1", interceptors: [internalAuth] }));
  const large = create(ListEventsRequestSchema, { limit: 1 });
  large.$unknown = [{ no: 99, wireType: WireType.LengthDelimited, data: new BinaryWriter().bytes(new Uint8Array(2 * 1024 * 1024)).finish() }];
  const slow = await holdSevenMiB();
  const outcomes: string[] = [];
  const call = () =>
    client.listEvents(large, { timeoutMs: 5_000 }).then(
      () => "ok",
      (error: unknown) => Code[ConnectError.from(error).code],
    );
  try {
    for (let i = 0; i < 3; i++) outcomes.push(await call());
  } finally {
    slow.destroy();
  }
  await new Promise((resolve) => setTimeout(resolve, 100));
  outcomes.push(await call());
  expect(outcomes).toEqual(["ResourceExhausted", "ResourceExhausted", "ResourceExhausted", "ok"]);
});

test("ByteBudget reserves up to its capacity and gives back what is released", () => {
  const budget = new ByteBudget(10);
  expect(budget.tryReserve(6)).toBe(true);
  expect(budget.tryReserve(5)).toBe(false);
  expect(budget.tryReserve(4)).toBe(true);
  budget.release(6);
  expect(budget.inUse).toBe(4);
  expect(budget.tryReserve(6)).toBe(true);
});

test("the operator's credential is read from Bearer and from HTTP Basic (any user name)", () => {
  expect(presentedCredential(`Bearer ${TEST_INTERNAL_TOKEN}`)).toBe(TEST_INTERNAL_TOKEN);
  expect(presentedCredential(`Basic ${Buffer.from(`anyone:${TEST_INTERNAL_TOKEN}`).toString("base64")}`)).toBe(TEST_INTERNAL_TOKEN);
  expect(presentedCredential(`Basic ${Buffer.from(TEST_INTERNAL_TOKEN).toString("base64")}`)).toBeUndefined();
  expect(presentedCredential(undefined)).toBeUndefined();
});

describe("in production", () => {
  test("/metrics needs the operator's credential; liveness stays open", async () => {
    const anonymous = await fetch(`${production.url}/metrics`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Bearer/);
    const wrong = await fetch(`${production.url}/metrics`, { headers: { authorization: "Bearer not-the-operator-0123456789abcdef" } });
    expect(wrong.status).toBe(401);
    const operator = await fetch(`${production.url}/metrics`, { headers: bearer });
    expect(operator.status).toBe(200);
    expect(await operator.text()).toContain("mcsv_rpc_duration_seconds_count");
    expect((await fetch(`${production.url}/health`)).status).toBe(200);
  });

  test("readiness tells anyone its status, and its details only to the operator", async () => {
    const anonymous = await fetch(`${production.url}/health/ready`);
    expect(anonymous.status).toBe(503);
    expect(await anonymous.json()).toEqual({ status: "not_ready", ready: false, checks: { postgres: "failing" } });
    const operator = await fetch(`${production.url}/health/ready`, { headers: { authorization: `Basic ${Buffer.from(`ops:${TEST_INTERNAL_TOKEN}`).toString("base64")}` } });
    expect(await operator.json()).toEqual({ status: "not_ready", ready: false, checks: { postgres: "connect ECONNREFUSED 10.1.2.3:5432" } });
  });

  test("in development both stay open", async () => {
    expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
  });
});
