/**
 * The standard OTEL_* switches, on one real service process (client-svc, the cheapest to start): no endpoint
 * exports nothing and says so once; OTEL_TRACES_EXPORTER=none exports nothing even with an endpoint; the
 * parentbased_traceidratio sampler drops unsampled roots and keeps a caller's sampled decision; grpc reaches a
 * gRPC collector. Spans are flushed when the service stops, so one call and a SIGTERM settle each case.
 */
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createServer as createHttp2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ClientService } from "@mcsv/sdk";
import { freePort } from "../../scripts/lib/embedded.js";
import { isReady, ROOT, serviceArguments } from "../../scripts/lib/system.js";
import { internalAuth, testAuthEnv } from "../support/credentials.js";
import { eventually } from "../support/eventually.js";
import { startOtlpReceiver, type OtlpReceiver } from "../support/otlp-receiver.js";

let receiver: OtlpReceiver;

beforeAll(async () => {
  receiver = await startOtlpReceiver();
});

afterAll(async () => {
  await receiver?.close();
});

/** Starts client-svc with `env`, makes one ListEvents call (with `interceptors`), stops it; returns its output. */
async function oneCall(env: Record<string, string>, interceptors: Interceptor[] = []): Promise<string> {
  const port = await freePort();
  const child = spawn(process.execPath, serviceArguments("client"), {
    cwd: ROOT,
    env: { PATH: process.env["PATH"]!, HOME: process.env["HOME"]!, ...testAuthEnv, CLIENT_PORT: String(port), HOST: "127.0.0.1", LOG_FORMAT: "json", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = once(child, "exit");
  const url = `http://127.0.0.1:${port}`;
  await eventually(async () => ((await isReady(url)) ? true : undefined), `client-svc to be ready:\n${output}`);
  const client = createClient(ClientService, createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [internalAuth, ...interceptors] }));
  await client.listEvents({ limit: 1 });
  child.kill("SIGTERM");
  await exited;
  return output;
}

const received = () => receiver.requests.filter((r) => r.path === "/v1/traces").length;

test("with no endpoint nothing is exported, and the service says so once", async () => {
  const output = await oneCall({});
  expect(output.match(/spans are not exported/g)).toHaveLength(1);
});

test("OTEL_TRACES_EXPORTER=none exports nothing even when an endpoint is set", async () => {
  const before = received();
  const output = await oneCall({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: "none" });
  expect(received()).toBe(before);
  expect(output).toMatch(/OTEL_TRACES_EXPORTER=none/);
});

test("the parentbased_traceidratio sampler: ratio 0 drops a root span, a sampled caller is still followed", async () => {
  const sampler = { OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json", OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: "0" };
  const before = received();
  await oneCall(sampler);
  expect(received()).toBe(before);

  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const sampledCaller: Interceptor = (next) => (req) => {
    req.header.set("traceparent", `00-${traceId}-00f067aa0ba902b7-01`);
    return next(req);
  };
  await oneCall(sampler, [sampledCaller]);
  const span = receiver.spans.find((s) => s.name === "mcsv.v1.ClientService/ListEvents" && s.traceId === traceId);
  expect(span).toMatchObject({ service: "client-svc", parentSpanId: "00f067aa0ba902b7", kind: "server" });
});

test("OTEL_EXPORTER_OTLP_PROTOCOL=grpc reaches a gRPC collector", async () => {
  const calls: { path: string; contentType: string }[] = [];
  const collector = createHttp2Server((req, res) => {
    req.resume();
    req.on("end", () => {
      calls.push({ path: String(req.headers[":path"]), contentType: String(req.headers["content-type"]) });
      // An empty ExportTraceServiceResponse in one gRPC frame, then status OK in the trailers.
      res.writeHead(200, { "content-type": "application/grpc" });
      res.addTrailers({ "grpc-status": "0" });
      res.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  try {
    const { port } = collector.address() as AddressInfo;
    await oneCall({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" });
    expect(calls.length).toBeGreaterThan(0);
    expect(calls[0]).toEqual({ path: "/opentelemetry.proto.collector.trace.v1.TraceService/Export", contentType: "application/grpc" });
  } finally {
    await new Promise<void>((resolve) => collector.close(() => resolve()));
  }
});
