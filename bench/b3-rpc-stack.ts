/**
 * B3: what the mcsv server stack costs per RPC. A trivial unary RPC (ClientService.ListEvents answering an empty
 * list) served by runService (tracing, log fields, metrics and auth interceptors) against the same handler on bare
 * connect-node, at several concurrencies, per protocol and HTTP version: Connect binary over keep-alive HTTP/1.1 (the
 * historical figure, `byConcurrency`) and over h2c, gRPC over h2c, gRPC-Web over HTTP/1.1 (`byProtocol`). The full
 * stack answers all of them on its one port (HTTP/1.1 and h2c sniffed per connection); the floor is
 * connectNodeAdapter on node:http for HTTP/1.1 and on node:http2's h2c server for HTTP/2. The full stack runs twice:
 * sampling every span and exporting it over OTLP to a local receiver, and with OTEL_TRACES_EXPORTER=none. Each
 * server is its own process; within each round every (protocol, concurrency) cell measures its three servers in
 * turn (cells and servers in rotated order). `httpVersionVerdict` says which of Connect over HTTP/1.1 and over h2c
 * is faster through the full stack: the default of createServiceClient's `httpVersion` for internal calls.
 */
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { ListEventsRequestSchema } from "@mcsv/sdk";
import { startOtlpReceiver } from "../test/support/otlp-receiver.js";
import { startNodeChild, type NodeChild } from "./lib/child.js";
import { ratio, type BenchOptions, type Ratio } from "./lib/context.js";
import { grpcEnvelope, runLoad, type LoadOptions, type LoadResult, type RpcProtocol } from "./lib/http-load.js";
import { runLoadH2 } from "./lib/http2-load.js";
import { stat } from "./lib/procfs.js";
import { median, round } from "./lib/stats.js";

const VARIANTS = ["bare", "traced", "untraced"] as const;
type Variant = (typeof VARIANTS)[number];

/** What a protocol's cells are measured with: wire protocol, HTTP version, request headers and body framing. */
const PROTOCOLS = [
  { key: "connect-h1", label: "Connect, HTTP/1.1", protocol: "connect", httpVersion: "1.1", contentType: "application/proto", concurrencies: [1, 16, 64] },
  { key: "connect-h2c", label: "Connect, h2c", protocol: "connect", httpVersion: "2", contentType: "application/proto", concurrencies: [1, 16, 64] },
  { key: "grpc-h2c", label: "gRPC, h2c", protocol: "grpc", httpVersion: "2", contentType: "application/grpc+proto", concurrencies: [1, 16, 64] },
  { key: "grpc-web-h1", label: "gRPC-Web, HTTP/1.1", protocol: "grpc-web", httpVersion: "1.1", contentType: "application/grpc-web+proto", concurrencies: [1, 16, 64] },
] as const satisfies ReadonlyArray<{ key: string; label: string; protocol: RpcProtocol; httpVersion: "1.1" | "2"; contentType: string; concurrencies: readonly number[] }>;
type ProtocolKey = (typeof PROTOCOLS)[number]["key"];

/** One (protocol, concurrency) cell: the floor for its HTTP version (`bare`) and the full stack twice. */
export interface B3Cell {
  concurrency: number;
  rps: Record<Variant, number>;
  p50Ms: Record<Variant, number>;
  /** CPU time of the server process per request, µs: what the stack costs, free of the load generator's share. */
  serverCpuUsPerRequest: Record<Variant, number>;
  /**
   * CPU time of the load generator (node:http or node:http2, no Connect client) per request, µs: what the calling
   * side's HTTP layer costs. `traced` includes the local OTLP receiver's share.
   */
  clientCpuUsPerRequest?: Record<Variant, number>;
  errors: number;
  firstError?: string;
  traced: Ratio;
  untraced: Ratio;
}

export interface B3HttpVersionVerdict {
  question: string;
  /** What was compared: the full stack, both traced and untraced, Connect binary. */
  basis: string;
  byConcurrency: Array<{
    concurrency: number;
    rps: { "1.1": Record<"traced" | "untraced", number>; "2": Record<"traced" | "untraced", number> };
    /** Median over rounds (and both full variants) of h2c's requests/s over HTTP/1.1's in the same round. */
    h2cOverHttp1: number;
    serverCpuUsPerRequest: { "1.1": number; "2": number };
    clientCpuUsPerRequest: { "1.1": number; "2": number };
    /** Within ±5 %: "tie". */
    faster: "1.1" | "2" | "tie";
  }>;
  /** Over concurrencies 16 and 64: rps first, server CPU per request to break a tie or a split. */
  faster: "1.1" | "2" | "tie";
  /** What createServiceClient's httpVersion should default to (a tie keeps "1.1", the current default). */
  recommendedDefault: "1.1" | "2";
  reason: string;
}

export interface B3Result {
  rpc: string;
  durationMsPerMeasurement: number;
  rounds: number;
  spansExported: number;
  /**
   * What each part costs (full runs only), requests/s at one concurrency: bare connect-node, then with the
   * OpenTelemetry SDK loaded (its async context tracking), then adding the shared interceptors one at a time
   * (tracing, log fields, metrics, auth; spans not exported), then runService itself.
   */
  breakdown?: { concurrency: number; rps: Array<{ variant: string; rps: number; ratio: number }> };
  /** Connect binary over keep-alive HTTP/1.1 (the same cells as byProtocol's "connect-h1"). */
  byConcurrency: B3Cell[];
  /** Each protocol and HTTP version against the floor for its HTTP version. */
  byProtocol?: Array<{ protocol: ProtocolKey; label: string; rpcProtocol: RpcProtocol; httpVersion: "1.1" | "2"; contentType: string; byConcurrency: B3Cell[] }>;
  httpVersionVerdict?: B3HttpVersionVerdict;
  /**
   * Cells at concurrency 1 where the full stack answers in ≥ 20 ms at the median while the floor takes < 5 ms: the
   * mark of Nagle's algorithm meeting delayed ACKs (≈ 40 ms on Linux), a socket without TCP_NODELAY. The figures of
   * such a protocol measure that delay, not the protocol.
   */
  latencyWarnings?: string[];
}

export async function runB3(options: BenchOptions): Promise<B3Result> {
  const rounds = options.quick ? 1 : 3;
  const durationMs = options.quick ? 1_000 : 1_500;
  const token = randomBytes(32).toString("base64url");
  const receiver = await startOtlpReceiver();
  const base = { PATH: process.env["PATH"], HOME: process.env["HOME"], MCSV_INTERNAL_TOKEN: token, NODE_ENV: "production" };
  const servers: Partial<Record<Variant | "bareH2", NodeChild>> = {};
  try {
    servers.bare = await startNodeChild("bench/lib/rpc-server.ts", ["bare"], { env: base });
    servers.bareH2 = await startNodeChild("bench/lib/rpc-server.ts", ["bare-h2"], { env: base });
    servers.traced = await startNodeChild("bench/lib/rpc-server.ts", ["full"], {
      preload: "./bench/lib/rpc-telemetry.ts",
      env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_SAMPLER: "always_on" },
    });
    servers.untraced = await startNodeChild("bench/lib/rpc-server.ts", ["full"], {
      preload: "./bench/lib/rpc-telemetry.ts",
      env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: "none" },
    });
    const message = toBinary(ListEventsRequestSchema, create(ListEventsRequestSchema, { limit: 10 }));
    const body = message;
    const headers = { "content-type": "application/proto", "connect-protocol-version": "1", authorization: `Bearer ${token}` };
    const requestOf = (p: (typeof PROTOCOLS)[number]): Pick<LoadOptions, "body" | "headers" | "protocol"> => {
      const auth = { authorization: `Bearer ${token}` };
      if (p.protocol === "grpc") return { body: grpcEnvelope(message), headers: { "content-type": p.contentType, te: "trailers", ...auth }, protocol: "grpc" };
      if (p.protocol === "grpc-web") return { body: grpcEnvelope(message), headers: { "content-type": p.contentType, "x-grpc-web": "1", ...auth }, protocol: "grpc-web" };
      return { body, headers, protocol: "connect" };
    };

    const serverCpu = new Map<string, { seconds: number; requests: number }>();
    const measure = async (variant: Variant, p: (typeof PROTOCOLS)[number], concurrency: number, ms: number) => {
      const server = variant === "bare" && p.httpVersion === "2" ? servers.bareH2! : servers[variant]!;
      const pid = server.child.pid!;
      const before = stat(pid)?.cpu ?? 0;
      const load = { url: `${server.url}/mcsv.v1.ClientService/ListEvents`, ...requestOf(p), concurrency, durationMs: ms };
      const result = p.httpVersion === "2" ? await runLoadH2(load) : await runLoad(load);
      const key = `${variant}@${p.key}@${concurrency}`;
      const entry = serverCpu.get(key) ?? { seconds: 0, requests: 0 };
      entry.seconds += (stat(pid)?.cpu ?? 0) - before;
      entry.requests += result.requests;
      serverCpu.set(key, entry);
      return result;
    };

    // Warm-up: JIT, connection pools, the exporter's first batch.
    for (const p of PROTOCOLS) for (const variant of VARIANTS) await measure(variant, p, 16, 500);

    const cells = PROTOCOLS.flatMap((p) => p.concurrencies.map((concurrency) => ({ p, concurrency })));
    const totals = new Map<string, { requests: number; seconds: number; errors: number; p50: number[]; clientUs: number[]; firstError?: string }>();
    /** Each round's requests/s, by `${variant}@${protocol}@${concurrency}`. */
    const perRound = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < cells.length; i++) {
        const { p, concurrency } = cells[(i + r) % cells.length]!;
        const order = VARIANTS.map((_, j) => VARIANTS[(j + r) % VARIANTS.length]!);
        const got = {} as Record<Variant, LoadResult>;
        for (const variant of order) {
          got[variant] = await measure(variant, p, concurrency, durationMs);
          const key = `${variant}@${p.key}@${concurrency}`;
          const t = totals.get(key) ?? { requests: 0, seconds: 0, errors: 0, p50: [], clientUs: [] };
          t.requests += got[variant].requests;
          t.seconds += got[variant].requests / got[variant].rps;
          t.errors += got[variant].errors;
          t.p50.push(got[variant].latencyMs.p50);
          t.clientUs.push(got[variant].clientCpuUsPerRequest);
          if (got[variant].firstError) t.firstError ??= `${variant}: ${got[variant].firstError}`;
          totals.set(key, t);
          perRound.set(key, [...(perRound.get(key) ?? []), got[variant].rps]);
        }
        options.log(
          `B3 round ${r + 1} ${p.label} c=${concurrency}: bare ${Math.round(got.bare.rps)}/s, traced ${Math.round(got.traced.rps)}/s, untraced ${Math.round(got.untraced.rps)}/s`,
        );
      }
    }

    const breakdown = options.quick ? undefined : await measureBreakdown(base, body, headers, options);

    const rpsOf = (variant: Variant, p: ProtocolKey, c: number) => {
      const t = totals.get(`${variant}@${p}@${c}`)!;
      return t.seconds > 0 ? t.requests / t.seconds : 0;
    };
    const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / Math.max(values.length, 1);
    const cpuOf = (variant: Variant, p: ProtocolKey, c: number) => {
      const e = serverCpu.get(`${variant}@${p}@${c}`)!;
      return round((e.seconds * 1e6) / Math.max(e.requests, 1), 0);
    };
    const clientCpuOf = (variant: Variant, p: ProtocolKey, c: number) => round(mean(totals.get(`${variant}@${p}@${c}`)!.clientUs), 0);
    const roundRatios = (variant: Variant, p: ProtocolKey, c: number) => {
      const full = perRound.get(`${variant}@${p}@${c}`)!;
      const bare = perRound.get(`bare@${p}@${c}`)!;
      return full.map((rps, i) => rps / bare[i]!);
    };
    const cell = (p: ProtocolKey, c: number): B3Cell => {
      const firstError = VARIANTS.map((v) => totals.get(`${v}@${p}@${c}`)!.firstError).find((e) => e);
      return {
        concurrency: c,
        rps: Object.fromEntries(VARIANTS.map((v) => [v, round(rpsOf(v, p, c), 0)])) as Record<Variant, number>,
        p50Ms: Object.fromEntries(VARIANTS.map((v) => [v, round(mean(totals.get(`${v}@${p}@${c}`)!.p50))])) as Record<Variant, number>,
        serverCpuUsPerRequest: Object.fromEntries(VARIANTS.map((v) => [v, cpuOf(v, p, c)])) as Record<Variant, number>,
        clientCpuUsPerRequest: Object.fromEntries(VARIANTS.map((v) => [v, clientCpuOf(v, p, c)])) as Record<Variant, number>,
        errors: VARIANTS.reduce((sum, v) => sum + totals.get(`${v}@${p}@${c}`)!.errors, 0),
        ...(firstError ? { firstError } : {}),
        traced: ratio(rpsOf("traced", p, c), rpsOf("bare", p, c), "requests/s", { min: 0.7 }, roundRatios("traced", p, c)),
        untraced: ratio(rpsOf("untraced", p, c), rpsOf("bare", p, c), "requests/s", { min: 0.7 }, roundRatios("untraced", p, c)),
      };
    };
    const byProtocol = PROTOCOLS.map((p) => ({
      protocol: p.key,
      label: p.label,
      rpcProtocol: p.protocol,
      httpVersion: p.httpVersion,
      contentType: p.contentType,
      byConcurrency: p.concurrencies.map((c) => cell(p.key, c)),
    }));

    const verdictCells = [16, 64].map((c) => {
      const h2cOverHttp1 = median(
        (["traced", "untraced"] as const).flatMap((v) => {
          const h1 = perRound.get(`${v}@connect-h1@${c}`)!;
          return perRound.get(`${v}@connect-h2c@${c}`)!.map((rps, i) => rps / h1[i]!);
        }),
      );
      const full = (p: ProtocolKey) => ({ traced: round(rpsOf("traced", p, c), 0), untraced: round(rpsOf("untraced", p, c), 0) });
      const fullCpu = (of: typeof cpuOf, p: ProtocolKey) => round((of("traced", p, c) + of("untraced", p, c)) / 2, 0);
      return {
        concurrency: c,
        rps: { "1.1": full("connect-h1"), "2": full("connect-h2c") },
        h2cOverHttp1: round(h2cOverHttp1),
        serverCpuUsPerRequest: { "1.1": fullCpu(cpuOf, "connect-h1"), "2": fullCpu(cpuOf, "connect-h2c") },
        clientCpuUsPerRequest: { "1.1": round(clientCpuOf("untraced", "connect-h1", c), 0), "2": round(clientCpuOf("untraced", "connect-h2c", c), 0) },
        faster: versionByRatio(h2cOverHttp1),
      };
    });

    const latencyWarnings = byProtocol.flatMap((p) =>
      p.byConcurrency
        .filter((c) => c.concurrency === 1 && c.p50Ms.bare < 5 && Math.max(c.p50Ms.traced, c.p50Ms.untraced) >= 20)
        .map(
          (c) =>
            `${p.label} at concurrency 1: the full stack answers in ${c.p50Ms.untraced} ms at the median (bare ${c.p50Ms.bare} ms), the ≈ 40 ms of Nagle's algorithm meeting delayed ACKs: its sockets lack TCP_NODELAY`,
        ),
    );
    for (const warning of latencyWarnings) options.log(`B3 warning: ${warning}`);

    return {
      rpc: "mcsv.v1.ClientService/ListEvents (empty answer)",
      durationMsPerMeasurement: durationMs,
      rounds,
      spansExported: receiver.requests.filter((r) => r.path === "/v1/traces").length,
      ...(breakdown ? { breakdown } : {}),
      byConcurrency: byProtocol.find((p) => p.protocol === "connect-h1")!.byConcurrency,
      byProtocol,
      httpVersionVerdict: httpVersionVerdict(verdictCells),
      ...(latencyWarnings.length ? { latencyWarnings } : {}),
    };
  } finally {
    await Promise.all(Object.values(servers).map((s) => s?.stop()));
    await receiver.close();
  }
}

/** ±5 % is within what a shared 2-core machine moves between rounds: no winner. */
const MARGIN = 0.05;
const versionByRatio = (h2cOverHttp1: number): "1.1" | "2" | "tie" => (h2cOverHttp1 >= 1 + MARGIN ? "2" : h2cOverHttp1 <= 1 - MARGIN ? "1.1" : "tie");

/**
 * Which HTTP version internal calls should use: the one faster in requests/s at both concurrencies (or at one, the
 * other a tie) unless its server CPU per request is worse by more than the margin; a split or a tie goes to the
 * lower server CPU per request; no clear difference keeps HTTP/1.1, the current default.
 */
export function httpVersionVerdict(cells: B3HttpVersionVerdict["byConcurrency"]): B3HttpVersionVerdict {
  const wins = (v: "1.1" | "2") => cells.filter((c) => c.faster === v).length;
  const cpu = (v: "1.1" | "2") => cells.reduce((sum, c) => sum + c.serverCpuUsPerRequest[v], 0) / Math.max(cells.length, 1);
  const cpuRatio = cpu("2") / cpu("1.1");
  const byCpu = versionByRatio(1 / cpuRatio);
  const figures = cells.map((c) => `c=${c.concurrency}: h2c/HTTP/1.1 ${c.h2cOverHttp1.toFixed(2)}`).join(", ");
  const cpuText = `server CPU per request h2c/HTTP/1.1 ${cpuRatio.toFixed(2)}`;
  let faster: B3HttpVersionVerdict["faster"];
  if (wins("2") > 0 && wins("1.1") === 0) faster = cpuRatio <= 1 + MARGIN ? "2" : "tie";
  else if (wins("1.1") > 0 && wins("2") === 0) faster = cpuRatio >= 1 - MARGIN ? "1.1" : "tie";
  else faster = byCpu;
  const split = wins("2") > 0 && wins("1.1") > 0;
  const recommendedDefault = faster === "2" ? "2" : "1.1";
  const reason =
    faster === "tie"
      ? `no clear difference (${figures}; ${cpuText}): keep HTTP/1.1`
      : split
        ? `requests/s split between the concurrencies, ${faster === "2" ? "h2c" : "HTTP/1.1"} costs the server less CPU per request (${figures}; ${cpuText})`
        : `${faster === "2" ? "h2c" : "HTTP/1.1"} is faster through the full stack (${figures}; ${cpuText})`;
  return {
    question: "Connect over HTTP/1.1 or over h2c for internal calls: the default of createServiceClient's httpVersion",
    basis: "full mcsv stack (traced and untraced), Connect binary, requests/s at concurrency 16 and 64 and server CPU per request",
    byConcurrency: cells,
    faster,
    recommendedDefault,
    reason,
  };
}

/** Each part of the stack added in turn, measured round-robin (B3's `breakdown`). */
async function measureBreakdown(
  base: Record<string, string | undefined>,
  body: Uint8Array,
  headers: Record<string, string>,
  options: BenchOptions,
): Promise<NonNullable<B3Result["breakdown"]>> {
  const concurrency = 16;
  const untraced = { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9", OTEL_TRACES_EXPORTER: "none" };
  const sdk = "./bench/lib/rpc-telemetry.ts";
  const steps: Array<{ variant: string; args: string[]; preload?: string }> = [
    { variant: "bare connect-node", args: ["bare"] },
    { variant: "+ OpenTelemetry SDK", args: ["bare"], preload: sdk },
    { variant: "+ tracing interceptor", args: ["parts", "tracing"], preload: sdk },
    { variant: "+ log fields", args: ["parts", "tracing,logs"], preload: sdk },
    { variant: "+ metrics", args: ["parts", "tracing,logs,metrics"], preload: sdk },
    { variant: "+ refusal", args: ["parts", "tracing,logs,metrics,refusal"], preload: sdk },
    { variant: "+ auth", args: ["parts", "tracing,logs,metrics,refusal,auth"], preload: sdk },
    { variant: "runService (all of it)", args: ["full"], preload: sdk },
  ];
  const servers: NodeChild[] = [];
  try {
    for (const step of steps) servers.push(await startNodeChild("bench/lib/rpc-server.ts", step.args, { env: untraced, ...(step.preload ? { preload: step.preload } : {}) }));
    const measure = (i: number, ms: number) =>
      runLoad({ url: `${servers[i]!.url}/mcsv.v1.ClientService/ListEvents`, body, headers, concurrency, durationMs: ms });
    for (let i = 0; i < steps.length; i++) await measure(i, 400);
    // Each round measures every step once; a step's ratio is the median over rounds of its rate over the same
    // round's bare rate, so that a disturbed round moves it least.
    const rates: number[][] = steps.map(() => []);
    for (let r = 0; r < 4; r++) {
      for (let i = 0; i < steps.length; i++) rates[i]!.push((await measure(i, 1_200)).rps);
    }
    const ratios = rates.map((perRound) => median(perRound.map((rps, r) => rps / rates[0]![r]!)));
    options.log(`B3 breakdown at c=${concurrency}: ${steps.map((s, i) => `${s.variant} ${ratios[i]!.toFixed(2)}`).join(", ")}`);
    return { concurrency, rps: steps.map((s, i) => ({ variant: s.variant, rps: round(median(rates[i]!), 0), ratio: round(ratios[i]!) })) };
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}
