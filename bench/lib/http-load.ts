/**
 * A bounded closed-loop HTTP/1.1 load generator (autocannon is not a dependency): `concurrency` loops, each sending
 * one POST at a time over its own keep-alive connection, until the time or request budget is spent. Request bodies
 * are encoded once, so the generator costs as little as it can per request and the same for every server it
 * measures. http2-load.ts is the same over HTTP/2 (h2c). `protocol` says how an answer is judged: Connect unary by
 * its HTTP status, gRPC and gRPC-Web by their grpc-status (in the trailers, or the body's trailer frame).
 */
import { Agent, request, type IncomingHttpHeaders } from "node:http";
import { percentiles, type Percentiles } from "./stats.js";

export type RpcProtocol = "connect" | "grpc" | "grpc-web";

export interface LoadOptions {
  url: string;
  body: Uint8Array;
  headers: Record<string, string>;
  concurrency: number;
  durationMs: number;
  /** Hard cap on requests, whatever the duration. */
  maxRequests?: number;
  /** How an answer is judged a success; default "connect" (HTTP 200). */
  protocol?: RpcProtocol;
}

export interface LoadResult {
  requests: number;
  errors: number;
  /** Completed requests per second. */
  rps: number;
  latencyMs: Percentiles;
  /** CPU time of this process (the load generator) per completed request, µs. */
  clientCpuUsPerRequest: number;
  /** The first error, for the report. */
  firstError?: string;
}

/** A gRPC / gRPC-Web length-prefixed message: flags (0: uncompressed data), big-endian length, the message. */
export function grpcEnvelope(message: Uint8Array, flags = 0): Uint8Array {
  const framed = new Uint8Array(5 + message.byteLength);
  framed[0] = flags;
  new DataView(framed.buffer).setUint32(1, message.byteLength);
  framed.set(message, 5);
  return framed;
}

/** The grpc-status in a gRPC-Web body's trailer frame (flags 0x80), or undefined without one. */
export function grpcWebTrailerStatus(body: Buffer): string | undefined {
  let at = 0;
  while (at + 5 <= body.length) {
    const flags = body[at]!;
    const length = body.readUInt32BE(at + 1);
    if (flags & 0x80) {
      const match = /(?:^|\r\n)grpc-status:\s*(\d+)/i.exec(body.subarray(at + 5, at + 5 + length).toString("latin1"));
      return match?.[1];
    }
    at += 5 + length;
  }
  return undefined;
}

/**
 * Why an answer is not a success (undefined when it is): not HTTP 200, or, for gRPC and gRPC-Web, a grpc-status
 * other than 0 (a trailers-only answer carries it in the headers).
 */
export function answerError(
  protocol: RpcProtocol,
  status: number,
  headers: IncomingHttpHeaders,
  trailers: IncomingHttpHeaders | undefined,
  body: Buffer | undefined,
): string | undefined {
  if (status !== 200) return `HTTP ${status}`;
  if (protocol === "connect") return undefined;
  const grpcStatus = String(headers["grpc-status"] ?? trailers?.["grpc-status"] ?? (protocol === "grpc-web" && body ? (grpcWebTrailerStatus(body) ?? "") : ""));
  if (grpcStatus === "0") return undefined;
  return grpcStatus ? `grpc-status ${grpcStatus}: ${String(headers["grpc-message"] ?? trailers?.["grpc-message"] ?? "")}` : "no grpc-status";
}

/**
 * The closed loop shared by both generators: `concurrency` loops, each awaiting `send` (one request, resolving to
 * an error message or undefined) until the deadline or the request cap.
 */
export async function closedLoop(options: LoadOptions, send: (loop: number) => Promise<string | undefined>): Promise<LoadResult> {
  const latencies: number[] = [];
  let errors = 0;
  let sent = 0;
  let firstError: string | undefined;
  const maxRequests = options.maxRequests ?? 5_000_000;
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + options.durationMs;
  await Promise.all(
    Array.from({ length: options.concurrency }, async (_, loop) => {
      while (performance.now() < deadline && sent < maxRequests) {
        sent++;
        const t = performance.now();
        try {
          const error = await send(loop);
          if (error !== undefined) {
            errors++;
            firstError ??= error;
          } else latencies.push(performance.now() - t);
        } catch (error) {
          errors++;
          firstError ??= error instanceof Error ? error.message : String(error);
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  return {
    requests: latencies.length,
    errors,
    rps: latencies.length / elapsed,
    latencyMs: percentiles(latencies),
    clientCpuUsPerRequest: Math.round((cpu.user + cpu.system) / Math.max(latencies.length, 1)),
    ...(firstError ? { firstError } : {}),
  };
}

function post(agent: Agent, url: URL, options: LoadOptions, protocol: RpcProtocol): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: "POST", agent, headers: { ...options.headers, "content-length": String(options.body.byteLength) } },
      (res) => {
        // Only gRPC-Web needs the body (its trailer frame); the others' bodies are read and dropped.
        const chunks: Buffer[] | undefined = protocol === "grpc-web" ? [] : undefined;
        res.on("data", (chunk: Buffer) => chunks?.push(chunk));
        res.on("end", () => resolve(answerError(protocol, res.statusCode ?? 0, res.headers, res.trailers, chunks && Buffer.concat(chunks))));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(options.body);
  });
}

/** HTTP/1.1: each loop on its own keep-alive connection. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const url = new URL(options.url);
  const protocol = options.protocol ?? "connect";
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  try {
    return await closedLoop(options, () => post(agent, url, options, protocol));
  } finally {
    agent.destroy();
  }
}
