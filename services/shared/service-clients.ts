/**
 * Clients for calling other mcsv services: Connect with binary protobuf over HTTP/1.1 (keep-alive connections) or
 * HTTP/2 (one multiplexed session per peer), http or https, a deadline on every call, the calling service's own
 * credential, and the shared client interceptors.
 */
import { Agent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "./auth.js";
import { metricsInterceptor } from "./interceptors.js";
import { clientTracingInterceptor } from "./tracing.js";

/** One pool of keep-alive sockets per process and scheme, shared by every HTTP/1.1 client. */
const keepAliveAgents = { http: new Agent({ keepAlive: true, maxSockets: 64 }), https: new HttpsAgent({ keepAlive: true, maxSockets: 64 }) };

export interface ClientOptions {
  /** The calling service's own credential (MCSV_SERVICE_TOKEN); the callee grants it the methods in INTERNAL_CALLS. */
  credential: string;
  /** Deadline of each call unless the call sets its own. */
  timeoutMs?: number;
  /** "2": HTTP/2 (h2c on http URLs); default "1.1". */
  httpVersion?: "1.1" | "2";
  interceptors?: Interceptor[];
}

export function createServiceClient<T extends DescService>(service: T, baseUrl: string, options: ClientOptions): Client<T> {
  const common = {
    baseUrl,
    useBinaryFormat: true,
    defaultTimeoutMs: options.timeoutMs ?? 30_000,
    interceptors: [clientTracingInterceptor, metricsInterceptor("client"), bearerInterceptor(options.credential), ...(options.interceptors ?? [])],
  };
  const transport =
    options.httpVersion === "2"
      ? createConnectTransport({ ...common, httpVersion: "2" })
      : createConnectTransport({ ...common, httpVersion: "1.1", nodeOptions: { agent: baseUrl.startsWith("https:") ? keepAliveAgents.https : keepAliveAgents.http } });
  return createClient(service, transport);
}
