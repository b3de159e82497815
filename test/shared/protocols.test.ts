/**
 * Every protocol on every port: one mcsv server answers Connect, gRPC and gRPC-Web, over HTTP/1.1 and h2c on the same
 * port (and over TLS, where ALPN chooses), and every shared interceptor behaves the same on each: authentication
 * before parsing, the caller in the handler's context, log fields, metrics, error mapping, streams.
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { connect } from "node:net";
import { join } from "node:path";
import { Writable } from "node:stream";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { ClientService, ConversionSchema, UserService } from "@mcsv/sdk";
import winston from "winston";
import { principalOf, type Principal } from "../../services/shared/auth.js";
import { createServiceClient } from "../../services/shared/service-clients.js";
import { isHttp2Preface } from "../../services/shared/listener.js";
import { createLogger } from "../../services/shared/logger.js";
import { databaseUnavailable } from "../../services/shared/database.js";
import { runService, type RunningService } from "../../services/shared/server.js";
import { operatorPolicy, TEST_INTERNAL_TOKEN } from "../support/credentials.js";
import { startH2cServer } from "../support/h2c.js";

const lines: Record<string, unknown>[] = [];
const logger = createLogger("protocols-test", { level: "info", format: "json" });
// Only the lines, into the array: not the console.
logger.clear();
logger.add(
  new winston.transports.Stream({
    stream: new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    }),
  }),
);
const seen: Principal[] = [];
let server: RunningService;
let tlsServer: RunningService;
let tlsDir: string;

const routes = (router: Parameters<Parameters<typeof runService>[0]["routes"]>[0]) => {
  router.service(ClientService, {
    listEvents: (request, ctx) => {
      seen.push(principalOf(ctx)!);
      logger.info("listing events");
      // A database that went away is unavailable to the caller, whatever the protocol.
      if (request.limit === 13) throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" });
      return { events: [] };
    },
  });
  router.service(UserService, {
    async *watchConversion(request) {
      yield { conversion: create(ConversionSchema, { id: request.conversionId }) };
      yield { conversion: create(ConversionSchema, { id: `${request.conversionId}-again` }) };
    },
  });
};

beforeAll(async () => {
  server = await runService({ name: "protocols-test", port: 0, host: "127.0.0.1", logger, auth: operatorPolicy, routes, dependencyErrors: databaseUnavailable });
  tlsDir = mkdtempSync(join(tmpdir(), "mcsv-tls-"));
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(tlsDir, "key.pem"), "-out", join(tlsDir, "cert.pem")], { stdio: "ignore" });
  tlsServer = await runService({
    name: "protocols-tls-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    routes,
    dependencyErrors: databaseUnavailable,
    tls: { cert: readFileSync(join(tlsDir, "cert.pem")), key: readFileSync(join(tlsDir, "key.pem")) },
  });
});

afterAll(async () => {
  await server?.shutdown("test over");
  await tlsServer?.shutdown("test over");
  rmSync(tlsDir, { recursive: true, force: true });
});

type Make = (baseUrl: string) => Transport;
const PROTOCOLS: [string, Make][] = [
  ["Connect over HTTP/1.1", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "1.1" })],
  ["Connect over h2c", (baseUrl) => createConnectTransport({ baseUrl, httpVersion: "2" })],
  ["gRPC over h2c", (baseUrl) => createGrpcTransport({ baseUrl })],
  ["gRPC-Web over HTTP/1.1", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "1.1" })],
  ["gRPC-Web over h2c", (baseUrl) => createGrpcWebTransport({ baseUrl, httpVersion: "2" })],
];

async function codeOf(call: Promise<unknown>): Promise<string> {
  try {
    await call;
    return "ok";
  } catch (error) {
    return Code[ConnectError.from(error).code];
  }
}

async function metricCount(code: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("mcsv_rpc_duration_seconds_count{") && l.includes('side="server"') && l.includes('rpc_method="ListEvents"') && l.includes(`code="${code}"`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

describe.each(PROTOCOLS)("%s", (name, make) => {
  test("a call with the credential gets through, as the operator, with its log fields and metrics", async () => {
    const transport = make(server.url);
    const client = createClient(ClientService, transport);
    const okBefore = await metricCount("ok");
    seen.length = 0;
    lines.length = 0;
    await client.listEvents({ limit: 1 }, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } });
    expect(seen).toEqual([{ kind: "operator" }]);
    expect(lines.find((l) => l["message"] === "listing events")).toMatchObject({ rpc: "mcsv.v1.ClientService/ListEvents" });
    expect(await metricCount("ok")).toBe(okBefore + 1);
  });

  test("without a credential, or with a wrong one, it is refused before the handler runs, and counted", async () => {
    const client = createClient(ClientService, make(server.url));
    const before = await metricCount("unauthenticated");
    seen.length = 0;
    expect(await codeOf(client.listEvents({ limit: 1 }))).toBe("Unauthenticated");
    expect(await codeOf(client.listEvents({ limit: 1 }, { headers: { authorization: "Bearer not-the-operator-0123456789abcdef" } }))).toBe("Unauthenticated");
    expect(seen).toEqual([]);
    expect(await metricCount("unauthenticated")).toBe(before + 2);
  });

  test("errors are mapped the same: a lost database is unavailable", async () => {
    const client = createClient(ClientService, make(server.url));
    expect(await codeOf(client.listEvents({ limit: 13 }, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } }))).toBe("Unavailable");
  });

  test("server streams arrive whole", async () => {
    const client = createClient(UserService, make(server.url));
    const ids: string[] = [];
    for await (const res of client.watchConversion({ conversionId: name }, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } })) ids.push(res.conversion!.id);
    expect(ids).toEqual([name, `${name}-again`]);
  });
});

test("with TLS, ALPN serves HTTP/2 and HTTP/1.1 on the one port", async () => {
  const ca = readFileSync(join(tlsDir, "cert.pem"));
  const headers = { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` };
  expect(tlsServer.url).toMatch(/^https:/);
  for (const transport of [
    createGrpcTransport({ baseUrl: tlsServer.url, nodeOptions: { ca } }),
    createConnectTransport({ baseUrl: tlsServer.url, httpVersion: "2", nodeOptions: { ca } }),
    createConnectTransport({ baseUrl: tlsServer.url, httpVersion: "1.1", nodeOptions: { ca } }),
  ]) {
    expect(await codeOf(createClient(ClientService, transport).listEvents({ limit: 1 }, { headers }))).toBe("ok");
    expect(await codeOf(createClient(ClientService, transport).listEvents({ limit: 1 }))).toBe("Unauthenticated");
  }
});

test("the HTTP/2 preface is told from every HTTP/1.1 request by its first bytes", () => {
  expect(isHttp2Preface(Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))).toBe(true);
  expect(isHttp2Preface(Buffer.from("PRI "))).toBe(true);
  for (const method of ["POST", "PUT ", "PATCH", "GET ", "PROPFIND", "PRIX"]) expect(isHttp2Preface(Buffer.from(method))).toBe(false);
});

test("a stopping server finishes an HTTP/2 call in flight and then refuses new connections", async () => {
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const stopping = await runService({
    name: "protocols-drain-test",
    port: 0,
    host: "127.0.0.1",
    logger,
    auth: operatorPolicy,
    routes: (router) =>
      router.service(ClientService, {
        listEvents: async () => {
          await held;
          return { events: [] };
        },
      }),
  });
  const client = createClient(ClientService, createGrpcTransport({ baseUrl: stopping.url }));
  const inFlight = client.listEvents({ limit: 1 }, { headers: { authorization: `Bearer ${TEST_INTERNAL_TOKEN}` } });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const shutdown = stopping.shutdown("test");
  await new Promise((resolve) => setTimeout(resolve, 100));
  release();
  expect(await codeOf(inFlight)).toBe("ok");
  await shutdown;
  // (A client maps the refusal to unavailable; under jest, node's errors come from another realm and connect-node
  // cannot tell them, so the socket is asked directly.)
  const { port } = new URL(stopping.url);
  const refused = await new Promise<string>((resolve) => connect(Number(port), "127.0.0.1").once("connect", () => resolve("connected")).once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "")));
  expect(refused).toBe("ECONNREFUSED");
});

test("server reflection is open by default, and behind any valid credential when configured; health stays open", async () => {
  // Asynchronously: the servers answer from this process.
  const buf = (args: string[]) => promisify(execFile)(join(process.cwd(), "node_modules", ".bin", "buf"), ["curl", ...args], { cwd: tmpdir(), encoding: "utf8" });
  const listServices = (url: string, headers: string[] = []) =>
    buf(["--list-services", ...headers, url]).then(
      ({ stdout }) => stdout,
      (error: { stderr?: string }) => `failed: ${String(error.stderr)}`,
    );
  expect(await listServices(server.url)).toContain("mcsv.v1.ClientService");
  const guarded = await runService({ name: "protocols-reflection-test", port: 0, host: "127.0.0.1", logger, auth: operatorPolicy, routes, reflectionNeedsCredential: true });
  try {
    expect(await listServices(guarded.url)).toMatch(/^failed: [\s\S]*(unauthenticated|not authenticated)/);
    expect(await listServices(guarded.url, ["--reflect-header", "Authorization: Bearer not-the-operator-0123456789abcdef"])).toMatch(/^failed: [\s\S]*(unauthenticated|not authenticated)/);
    // buf curl sends headers with its reflection requests only when told to.
    expect(await listServices(guarded.url, ["--reflect-header", `Authorization: Bearer ${TEST_INTERNAL_TOKEN}`])).toContain("mcsv.v1.UserService");
    const { stdout: health } = await buf(["--protocol", "grpc", "--http2-prior-knowledge", "--schema", join(process.cwd(), "proto-grpc"), "--data", "{}", `${guarded.url}/grpc.health.v1.Health/Check`]);
    expect(JSON.parse(health)).toEqual({ status: "SERVING" });
  } finally {
    await guarded.shutdown("test over");
  }
});

test("service clients speak HTTP/2 when asked (INTERNAL_HTTP_VERSION=2): an HTTP/2-only server answers them", async () => {
  const h2only = await startH2cServer((router) => router.service(ClientService, { listEvents: () => ({ events: [] }) }));
  try {
    const over2 = createServiceClient(ClientService, h2only.baseUrl, { credential: TEST_INTERNAL_TOKEN, httpVersion: "2", timeoutMs: 5_000 });
    expect(await codeOf(over2.listEvents({ limit: 1 }))).toBe("ok");
    // The same server cannot answer HTTP/1.1: the default client does not reach it.
    const over1 = createServiceClient(ClientService, h2only.baseUrl, { credential: TEST_INTERNAL_TOKEN, timeoutMs: 5_000 });
    expect(await codeOf(over1.listEvents({ limit: 1 }))).not.toBe("ok");
  } finally {
    await h2only.close();
  }
});
