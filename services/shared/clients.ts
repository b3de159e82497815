/**
 * Clients for calling other mcsv services: Connect over HTTP/1.1 with binary protobuf, keep-alive connections,
 * a deadline on every call, the calling service's own credential, and the shared client interceptors.
 */
import { Agent } from "node:http";
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { bearerInterceptor } from "./auth.js";
import { metricsInterceptor } from "./interceptors.js";
import { clientTracingInterceptor } from "./tracing.js";

/** One pool of keep-alive sockets per process, shared by every client. */
const keepAliveAgent = new Agent({ keepAlive: true, maxSockets: 64 });

export interface ClientOptions {
  /** The calling service's own credential (MCSV_SERVICE_TOKEN); the callee grants it the methods in INTERNAL_CALLS. */
  credential: string;
  /** Deadline of each call unless the call sets its own. */
  timeoutMs?: number;
  interceptors?: Interceptor[];
}

export function createServiceClient<T extends DescService>(service: T, baseUrl: string, options: ClientOptions): Client<T> {
  const transport = createConnectTransport({
    baseUrl,
    httpVersion: "1.1",
    useBinaryFormat: true,
    defaultTimeoutMs: options.timeoutMs ?? 30_000,
    interceptors: [clientTracingInterceptor, metricsInterceptor("client"), bearerInterceptor(options.credential), ...(options.interceptors ?? [])],
    nodeOptions: { agent: keepAliveAgent },
  });
  return createClient(service, transport);
}
