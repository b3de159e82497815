/**
 * B3: what the mcsv server stack costs per RPC. A trivial unary RPC (ClientService.ListEvents answering an empty
 * list) served by runService (tracing, log fields, metrics and auth interceptors) against the same handler on bare
 * connect-node, at several concurrencies, over keep-alive HTTP/1.1 with binary protobuf. The full stack runs twice:
 * sampling every span and exporting it over OTLP to a local receiver, and with OTEL_TRACES_EXPORTER=none. Each
 * server is its own process; the three are measured in turn within each round (order rotated every round).
 */
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { ListEventsRequestSchema } from "@mcsv/sdk";
import { startOtlpReceiver } from "../test/support/otlp-receiver.js";
import { startNodeChild, type NodeChild } from "./lib/child.js";
import { ratio, type BenchOptions, type Ratio } from "./lib/context.js";
import { runLoad, type LoadResult } from "./lib/http-load.js";
import { stat } from "./lib/procfs.js";
import { median, round } from "./lib/stats.js";

const VARIANTS = ["bare", "traced", "untraced"] as const;
type Variant = (typeof VARIANTS)[number];

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
  byConcurrency: Array<{
    concurrency: number;
    rps: Record<Variant, number>;
    p50Ms: Record<Variant, number>;
    /** CPU time of the server process per request, µs: what the stack costs, free of the load generator's share. */
    serverCpuUsPerRequest: Record<Variant, number>;
    errors: number;
    traced: Ratio;
    untraced: Ratio;
  }>;
}

export async function runB3(options: BenchOptions): Promise<B3Result> {
  const concurrencies = options.quick ? [1, 16, 64] : [1, 16, 64];
  const rounds = options.quick ? 1 : 3;
  const durationMs = options.quick ? 1_000 : 2_500;
  const token = randomBytes(32).toString("base64url");
  const receiver = await startOtlpReceiver();
  const base = { PATH: process.env["PATH"], HOME: process.env["HOME"], MCSV_INTERNAL_TOKEN: token, NODE_ENV: "production" };
  const servers: Partial<Record<Variant, NodeChild>> = {};
  try {
    servers.bare = await startNodeChild("bench/lib/rpc-server.ts", ["bare"], { env: base });
    servers.traced = await startNodeChild("bench/lib/rpc-server.ts", ["full"], {
      preload: "./bench/lib/rpc-telemetry.ts",
      env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_SAMPLER: "always_on" },
    });
    servers.untraced = await startNodeChild("bench/lib/rpc-server.ts", ["full"], {
      preload: "./bench/lib/rpc-telemetry.ts",
      env: { ...base, OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_TRACES_EXPORTER: "none" },
    });
    const body = toBinary(ListEventsRequestSchema, create(ListEventsRequestSchema, { limit: 10 }));
    const headers = { "content-type": "application/proto", "connect-protocol-version": "1", authorization: `Bearer ${token}` };
    const serverCpu = new Map<string, { seconds: number; requests: number }>();
    const measure = async (variant: Variant, concurrency: number, ms: number) => {
      const pid = servers[variant]!.child.pid!;
      const before = stat(pid)?.cpu ?? 0;
      const result = await runLoad({ url: `${servers[variant]!.url}/mcsv.v1.ClientService/ListEvents`, body, headers, concurrency, durationMs: ms });
      const key = `${variant}@${concurrency}`;
      const entry = serverCpu.get(key) ?? { seconds: 0, requests: 0 };
      entry.seconds += (stat(pid)?.cpu ?? 0) - before;
      entry.requests += result.requests;
      serverCpu.set(key, entry);
      return result;
    };

    // Warm-up: JIT, connection pools, the exporter's first batch.
    for (const variant of VARIANTS) await measure(variant, 16, 500);

    const totals = new Map<string, { requests: number; seconds: number; errors: number; p50: number[] }>();
    const perRound = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      for (const concurrency of concurrencies) {
        const order = VARIANTS.map((_, i) => VARIANTS[(i + r) % VARIANTS.length]!);
        const got = {} as Record<Variant, LoadResult>;
        for (const variant of order) {
          got[variant] = await measure(variant, concurrency, durationMs);
          const key = `${variant}@${concurrency}`;
          const t = totals.get(key) ?? { requests: 0, seconds: 0, errors: 0, p50: [] };
          t.requests += got[variant].requests;
          t.seconds += got[variant].requests / got[variant].rps;
          t.errors += got[variant].errors;
          t.p50.push(got[variant].latencyMs.p50);
          totals.set(key, t);
        }
        for (const variant of ["traced", "untraced"] as const) {
          const key = `${variant}@${concurrency}`;
          perRound.set(key, [...(perRound.get(key) ?? []), got[variant].rps / got.bare.rps]);
        }
        options.log(`B3 round ${r + 1} c=${concurrency}: bare ${Math.round(got.bare.rps)}/s, traced ${Math.round(got.traced.rps)}/s, untraced ${Math.round(got.untraced.rps)}/s`);
      }
    }

    const breakdown = options.quick ? undefined : await measureBreakdown(base, body, headers, options);

    const rpsOf = (variant: Variant, c: number) => {
      const t = totals.get(`${variant}@${c}`)!;
      return t.requests / t.seconds;
    };
    const p50Of = (variant: Variant, c: number) => {
      const t = totals.get(`${variant}@${c}`)!;
      return round(t.p50.reduce((a, b) => a + b, 0) / t.p50.length);
    };
    return {
      rpc: "mcsv.v1.ClientService/ListEvents (empty answer)",
      durationMsPerMeasurement: durationMs,
      rounds,
      spansExported: receiver.requests.filter((r) => r.path === "/v1/traces").length,
      ...(breakdown ? { breakdown } : {}),
      byConcurrency: concurrencies.map((c) => ({
        concurrency: c,
        rps: Object.fromEntries(VARIANTS.map((v) => [v, round(rpsOf(v, c), 0)])) as Record<Variant, number>,
        p50Ms: Object.fromEntries(VARIANTS.map((v) => [v, p50Of(v, c)])) as Record<Variant, number>,
        serverCpuUsPerRequest: Object.fromEntries(
          VARIANTS.map((v) => {
            const e = serverCpu.get(`${v}@${c}`)!;
            return [v, round((e.seconds * 1e6) / Math.max(e.requests, 1), 0)];
          }),
        ) as Record<Variant, number>,
        errors: VARIANTS.reduce((sum, v) => sum + totals.get(`${v}@${c}`)!.errors, 0),
        traced: ratio(rpsOf("traced", c), rpsOf("bare", c), "requests/s", { min: 0.7 }, perRound.get(`traced@${c}`)),
        untraced: ratio(rpsOf("untraced", c), rpsOf("bare", c), "requests/s", { min: 0.7 }, perRound.get(`untraced@${c}`)),
      })),
    };
  } finally {
    await Promise.all(Object.values(servers).map((s) => s?.stop()));
    await receiver.close();
  }
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
    { variant: "+ auth", args: ["parts", "tracing,logs,metrics,auth"], preload: sdk },
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
