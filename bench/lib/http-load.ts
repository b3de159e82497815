/**
 * A bounded closed-loop HTTP load generator (autocannon is not a dependency): `concurrency` loops, each sending one
 * POST at a time over its own keep-alive connection, until the time or request budget is spent. Request bodies are
 * encoded once, so the generator costs as little as it can per request and the same for every server it measures.
 */
import { Agent, request } from "node:http";
import { percentiles, type Percentiles } from "./stats.js";

export interface LoadOptions {
  url: string;
  body: Uint8Array;
  headers: Record<string, string>;
  concurrency: number;
  durationMs: number;
  /** Hard cap on requests, whatever the duration. */
  maxRequests?: number;
}

export interface LoadResult {
  requests: number;
  errors: number;
  /** Completed requests per second. */
  rps: number;
  latencyMs: Percentiles;
  /** The first error, for the report. */
  firstError?: string;
}

function post(agent: Agent, url: URL, options: LoadOptions): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: "POST", agent, headers: { ...options.headers, "content-length": String(options.body.byteLength) } },
      (res) => {
        res.on("data", () => undefined);
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const url = new URL(options.url);
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const latencies: number[] = [];
  let errors = 0;
  let sent = 0;
  let firstError: string | undefined;
  const maxRequests = options.maxRequests ?? 5_000_000;
  const started = performance.now();
  const deadline = started + options.durationMs;
  try {
    await Promise.all(
      Array.from({ length: options.concurrency }, async () => {
        while (performance.now() < deadline && sent < maxRequests) {
          sent++;
          const t = performance.now();
          try {
            const status = await post(agent, url, options);
            if (status !== 200) {
              errors++;
              firstError ??= `HTTP ${status}`;
            } else latencies.push(performance.now() - t);
          } catch (error) {
            errors++;
            firstError ??= error instanceof Error ? error.message : String(error);
          }
        }
      }),
    );
  } finally {
    agent.destroy();
  }
  const elapsed = (performance.now() - started) / 1000;
  return { requests: latencies.length, errors, rps: latencies.length / elapsed, latencyMs: percentiles(latencies), ...(firstError ? { firstError } : {}) };
}
