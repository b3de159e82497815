/**
 * Server bootstrap shared by the five services: Connect, gRPC and gRPC-Web routes on one port for HTTP/1.1 and
 * HTTP/2 (listener.ts), health and readiness,
 * /metrics, and a graceful shutdown on SIGTERM or SIGINT that stops accepting work and finishes what is in flight.
 * Every RPC is authenticated, and its bytes budgeted, before its body is read (admission.ts).
 */
import { ServerResponse } from "node:http";
import type { DescService } from "@bufbuild/protobuf";
import type { AddressInfo } from "node:net";
import { Code, ConnectError, createConnectRouter, type ConnectRouter, type ConnectRouterOptions, type Interceptor } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { createListener, type AnyRequest, type AnyResponse, type Listener, type TlsFiles } from "./listener.js";
import { admit, ByteBudget, presentedCredential, refusalInterceptor, type Admission } from "./admission.js";
import type { AuthPolicy } from "./auth.js";
import { describeError } from "./errors.js";
import { dependencyErrorsInterceptor, logFieldsInterceptor, metricsInterceptor, type DependencyErrors } from "./interceptors.js";
import type { Logger } from "./logger.js";
import { grpcServiceRoutes, Health, reflectionServices } from "./grpc/index.js";
import { correctParseErrors } from "./parse-errors.js";
import { renderMetrics } from "./metrics.js";
import { flushSpans, serverTracingInterceptor } from "./tracing.js";

/** Named checks of the service's own dependencies; each resolves when the dependency answers. */
export type ReadinessChecks = Record<string, () => Promise<unknown>>;

/** Who asks for a plain-HTTP route: `operator` when the request carries the operator's credential (Bearer or Basic). */
export interface PlainCaller {
  operator: boolean;
}

/** Extra plain-HTTP routes (a page, docs); returns false when it does not handle the request. */
export type PageHandler = (req: AnyRequest, res: AnyResponse, caller: PlainCaller) => boolean | Promise<boolean>;

export interface ServiceOptions {
  name: string;
  port: number;
  host?: string;
  logger: Logger;
  routes: (router: ConnectRouter) => void;
  /** Which credential each RPC requires (see auth.ts), checked before the body is read. */
  auth: AuthPolicy;
  /**
   * Production: /metrics needs the operator's credential, and readiness shows its details (error texts, addresses)
   * only to the operator. Liveness stays open for probes.
   */
  production?: boolean;
  readiness?: ReadinessChecks;
  /**
   * The readiness checks of dependencies that every replica shares (Postgres, S3). With `readinessCountsShared`
   * false they are still checked and reported, but do not make the process unready: a blip of a shared dependency
   * then does not take every replica out of its Service at once (READINESS_COUNTS_SHARED).
   */
  sharedDependencies?: readonly string[];
  readinessCountsShared?: boolean;
  /**
   * Readiness checks of optional features (OCR in the image service): always reported, never counted, so that a
   * feature the process can do without does not take it out of its Service (nor make gRPC health NOT_SERVING).
   */
  optionalDependencies?: readonly string[];
  pages?: PageHandler;
  /** Interceptors that run inside the shared ones (for example authentication). */
  interceptors?: Interceptor[];
  /** Tells the errors of an unreachable dependency (the service's database), answered unavailable instead of internal. */
  dependencyErrors?: DependencyErrors;
  /** Largest request message of any method, in bytes, after decompression; larger ones get resource_exhausted. */
  readMaxBytes?: number;
  /** Larger (or smaller) limits for named methods, e.g. the gateway's ConvertImage with an inline image. */
  readLimits?: Record<string, number>;
  /** Request bytes this process holds at once; a request beyond it gets resource_exhausted before it is read. */
  maxBytesInFlight?: number;
  shutdownGraceMs?: number;
  /**
   * gRPC server reflection is open to anyone by default (it lists what the service's contract already publishes);
   * with this, it needs a valid credential of any kind. Health is always open, for probes.
   */
  reflectionNeedsCredential?: boolean;
  /** With a certificate and key: TLS, and ALPN chooses h2 or http/1.1; without: HTTP/1.1 and h2c on the one port. */
  tls?: TlsFiles | undefined;
  /** Runs after the HTTP server stopped accepting requests: stop workers, finish jobs. */
  drain?: () => Promise<void>;
  /** Runs last: close pools and clients. */
  close?: () => Promise<void>;
}

export interface RunningService {
  server: Listener["server"];
  url: string;
  /** Aborted when shutdown begins; long-lived streams end on it. */
  stopping: AbortSignal;
  shutdown(reason?: string): Promise<void>;
}

const READINESS_TIMEOUT_MS = 2_000;
/** Internal RPCs carry metadata and keys, never file contents. */
const DEFAULT_READ_MAX_BYTES = 256 * 1024;
/**
 * The shared interceptors every server runs, named and in order (the benchmark measures them one by one). Tracing
 * is outermost, so that logs and metric exemplars of the RPC see its span; a refused request passes through all of
 * them before its refusal is thrown.
 */
export function serverInterceptors(options: Pick<ServiceOptions, "dependencyErrors">): Array<[string, Interceptor]> {
  return [
    ["tracing", serverTracingInterceptor],
    ["logs", logFieldsInterceptor],
    ["metrics", metricsInterceptor("server")],
    ["refusal", refusalInterceptor],
    ...(options.dependencyErrors ? [["dependency-errors", dependencyErrorsInterceptor(options.dependencyErrors)] as [string, Interceptor]] : []),
  ];
}

/** How long a stopping server goes on answering on open connections, each answer closing its connection. */
const DRAIN_LINGER_MS = 500;

function sendJson(res: AnyResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function checkReadiness(checks: ReadinessChecks, uncounted: ReadonlySet<string>): Promise<{ ready: boolean; checks: Record<string, string> }> {
  const results = await Promise.all(
    Object.entries(checks).map(async ([name, check]) => {
      try {
        await Promise.race([
          check(),
          new Promise((_, reject) => setTimeout(() => reject(new Error("timed out")), READINESS_TIMEOUT_MS).unref()),
        ]);
        return [name, "ok"] as const;
      } catch (error) {
        return [name, describeError(error)] as const;
      }
    }),
  );
  return { ready: results.every(([name, state]) => state === "ok" || uncounted.has(name)), checks: Object.fromEntries(results) };
}

export async function runService(options: ServiceOptions): Promise<RunningService> {
  const { logger } = options;
  const stopping = new AbortController();
  const shutdownSignal = new AbortController();
  const checks = options.readiness ?? {};
  const uncounted = new Set([...(options.readinessCountsShared === false ? (options.sharedDependencies ?? []) : []), ...(options.optionalDependencies ?? [])]);
  let inFlight = 0;

  const readMaxBytes = options.readMaxBytes ?? DEFAULT_READ_MAX_BYTES;
  const largestRead = Math.max(readMaxBytes, ...Object.values(options.readLimits ?? {}));
  const reflection = reflectionServices.map((service) => service.typeName);
  const maxBytesInFlight = options.maxBytesInFlight ?? Math.max(4 * largestRead, 16 * 1024 * 1024);
  const admission: Admission = {
    policy: options.auth,
    budget: new ByteBudget(maxBytesInFlight),
    internalBudget: new ByteBudget(maxBytesInFlight),
    open: new Set([Health.typeName, ...(options.reflectionNeedsCredential ? [] : reflection)]),
    anyCredential: new Set(options.reflectionNeedsCredential ? reflection : []),
  };
  // grpc.health.v1.Health follows readiness, and says NOT_SERVING once the server is stopping.
  const health = async () => (!stopping.signal.aborted && (await checkReadiness(checks, uncounted)).ready ? "serving" : "not_serving");
  const connect = connectHandler({
    routes: (router, mounted) => {
      options.routes(router);
      grpcServiceRoutes({ services: mounted(), health })(router);
    },
    interceptors: [...serverInterceptors(options).map(([, interceptor]) => interceptor), ...(options.interceptors ?? [])],
    // Unknown JSON fields are a client bug: reject them instead of silently dropping data.
    jsonOptions: { ignoreUnknownFields: false },
    readMaxBytes,
    readLimits: options.readLimits ?? {},
    admission,
    acceptCompression: [compressionGzip, compressionBrotli],
    shutdownSignal: shutdownSignal.signal,
    fallback: (req, res) => void handlePlain(req, res),
    logger,
  });

  async function handlePlain(req: AnyRequest, res: AnyResponse): Promise<void> {
    const path = (req.url ?? "/").split("?")[0];
    const caller: PlainCaller = { operator: options.auth.isOperator(presentedCredential(req.headers.authorization)) };
    try {
      if (req.method === "GET" && path === "/health") {
        return sendJson(res, 200, { status: "ok", service: options.name });
      }
      if (req.method === "GET" && path === "/health/ready") {
        if (stopping.signal.aborted) return sendJson(res, 503, { status: "draining", service: options.name });
        const readiness = await checkReadiness(checks, uncounted);
        const status = readiness.ready ? "ready" : "not_ready";
        // Error texts name hosts and addresses: in production only the operator reads them.
        const details = !options.production || caller.operator ? readiness.checks : Object.fromEntries(Object.entries(readiness.checks).map(([name, state]) => [name, state === "ok" ? "ok" : "failing"]));
        return sendJson(res, readiness.ready ? 200 : 503, { status, ready: readiness.ready, checks: details });
      }
      if (req.method === "GET" && path === "/metrics") {
        if (options.production && !caller.operator) {
          res.writeHead(401, { "www-authenticate": 'Bearer realm="mcsv metrics"', "content-type": "application/json" });
          return void res.end(JSON.stringify({ code: "unauthenticated", message: "metrics need the operator's credential" }));
        }
        // OpenMetrics (with exemplars) when the scrape asks for it, else the classic text format.
        const { contentType, body } = await renderMetrics({ accept: req.headers.accept });
        res.writeHead(200, { "content-type": contentType });
        return void res.end(body);
      }
      if (options.pages && (await options.pages(req, res, caller))) return;
      sendJson(res, 404, { code: "not_found", message: `no route for ${req.method} ${path}` });
    } catch (error) {
      logger.error("plain HTTP handler failed", { path, error: describeError(error) });
      if (!res.headersSent) sendJson(res, 500, { code: "internal", message: "internal error" });
      else res.destroy();
    }
  }

  const answering = new Set<AnyResponse>();
  /** HTTP/1.1 only: HTTP/2 forbids connection headers, and a session is ended with GOAWAY instead. */
  const closeConnectionAfter = (res: AnyResponse) => {
    if (res instanceof ServerResponse && !res.headersSent) res.setHeader("connection", "close");
  };
  const listener = createListener(
    (req, res) => {
      inFlight++;
      answering.add(res);
      res.once("close", () => {
        inFlight--;
        answering.delete(res);
      });
      // While stopping, every answer closes its connection (see shutdown).
      if (stopping.signal.aborted) closeConnectionAfter(res);
      connect(req, res);
    },
    { keepAliveTimeout: 65_000, tls: options.tls, onClientError: (error) => logger.debug("client error", { error: describeError(error) }) },
  );
  const server = listener.server;

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host ?? "0.0.0.0", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `${options.tls ? "https" : "http"}://127.0.0.1:${port}`;
  logger.info(`${options.name} listening`, { url });

  let shuttingDown: Promise<void> | undefined;
  async function shutdown(reason = "shutdown"): Promise<void> {
    shuttingDown ??= (async () => {
      logger.info(`${options.name} draining`, { reason });
      const grace = options.shutdownGraceMs ?? 10_000;
      const deadline = Date.now() + grace;
      stopping.abort();
      for (const res of answering) closeConnectionAfter(res);
      listener.goAway();
      const drained = options.drain?.().catch((error) => logger.error("drain failed", { error: describeError(error) }));
      // Closing a kept-alive connection races with the client's next request on it, which then fails with a reset
      // (connect: aborted) and no way to tell whether it was handled. So for a moment the server still answers, and
      // every answer closes its connection: clients learn of the shutdown from an answer and reconnect, which is
      // then refused (connect: unavailable). Only then does it stop listening and close what is still idle.
      const lingerUntil = Math.min(deadline, Date.now() + DRAIN_LINGER_MS);
      while (listener.connections > 0 && Date.now() < lingerUntil) await new Promise((resolve) => setTimeout(resolve, 20));
      listener.stopAccepting();
      listener.closeIdle();
      while (inFlight > 0 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        listener.closeIdle();
      }
      if (inFlight > 0) {
        logger.warn("grace period over, aborting requests still in flight", { inFlight });
        shutdownSignal.abort(new ConnectError("server is shutting down", Code.Unavailable));
      }
      await drained;
      listener.closeAll();
      await options.close?.().catch((error) => logger.error("close failed", { error: describeError(error) }));
      logger.info(`${options.name} stopped`);
    })();
    return shuttingDown;
  }

  return { server, url, stopping: stopping.signal, shutdown };
}

interface ConnectHandlerOptions extends ConnectRouterOptions {
  /** Registers the routes; `mounted` tells the services registered so far. */
  routes: (router: ConnectRouter, mounted: () => DescService[]) => void;
  readMaxBytes: number;
  readLimits: Record<string, number>;
  admission: Admission;
  fallback: (req: AnyRequest, res: AnyResponse) => void;
  logger: Logger;
}

/**
 * A router whose methods each get their own read limit (connect-es has one per router or per service): a service
 * registered on it is registered method by method.
 */
function routerWithReadLimits(router: ConnectRouter, limitOf: (method: string) => number, mounted: DescService[]): ConnectRouter {
  const limited: ConnectRouter = {
    get handlers() {
      return router.handlers;
    },
    service(service, implementation, options) {
      mounted.push(service);
      // A ServiceImpl maps each method's local name to its implementation.
      const impl = implementation as unknown as Record<string, ((...args: never[]) => unknown) | undefined>;
      for (const method of service.methods) {
        const fn = impl[method.localName];
        if (fn) router.rpc(method, fn.bind(implementation) as never, { ...options, readMaxBytes: limitOf(method.name) });
      }
      return limited;
    },
    rpc(method, impl, options) {
      router.rpc(method, impl, { readMaxBytes: limitOf(method.name), ...options });
      return limited;
    },
  };
  return limited;
}

/**
 * connectNodeAdapter's routing, with two changes: a request is admitted (authenticated, its bytes budgeted) before
 * its body is read, and each answer passes through correctParseErrors (parse-errors.ts) before it is written.
 */
function connectHandler(options: ConnectHandlerOptions) {
  const router = createConnectRouter(options);
  const limitOf = (method: string) => options.readLimits[method] ?? options.readMaxBytes;
  const mounted: DescService[] = [];
  options.routes(routerWithReadLimits(router, limitOf, mounted), () => [...mounted]);
  const handlers = new Map(router.handlers.map((handler) => [handler.requestPath, handler]));
  return (req: AnyRequest, res: AnyResponse): void => {
    const handler = handlers.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (!handler) return options.fallback(req, res);
    const rpc = { service: handler.service.typeName, method: handler.method.name, readMaxBytes: limitOf(handler.method.name) };
    admit(options.admission, rpc, req, res)
      .then((request) => handler(request))
      .then(correctParseErrors)
      .then((answer) => universalResponseToNodeResponse(answer, res))
      .catch((reason: unknown) => {
        // A client that went away mid-answer; anything else is worth a log line.
        if (ConnectError.from(reason).code === Code.Aborted || req.destroyed) return;
        options.logger.error("writing an RPC's answer failed", { rpc: `${handler.service.typeName}/${handler.method.name}`, error: describeError(reason) });
        if (!res.headersSent) res.writeHead(500).end();
        else res.destroy();
      });
  };
}

/**
 * A one-off command of a service (its migrate.ts): runs `task`, then exits 0, or logs why it failed and exits 1.
 */
export function runCommand(logger: Logger, what: string, task: () => Promise<void>): void {
  task().then(
    () => {
      logger.info(`${what}: done`);
      process.exit(0);
    },
    (error: unknown) => {
      logger.error(`${what} failed`, { error: describeError(error) });
      process.exit(1);
    },
  );
}

/**
 * Process-level wiring for a service's main.ts: stop gracefully on SIGTERM or SIGINT, log instead of dying on a
 * stray promise rejection, and exit non-zero with a clear message when start-up fails.
 */
export function runMain(logger: Logger, start: () => Promise<RunningService>): void {
  process.on("unhandledRejection", (reason) => logger.error("unhandled rejection", { error: describeError(reason) }));
  start().then(
    (running) => {
      const stop = (signal: NodeJS.Signals) => {
        // The spans of the last moments (the drain included) are exported before the process goes.
        void running.shutdown(signal).then(() => flushSpans()).then(() => process.exit(0));
      };
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
    },
    (error: unknown) => {
      logger.error("start-up failed", { error: describeError(error) });
      process.exitCode = 1;
      setTimeout(() => process.exit(1), 100).unref();
    },
  );
}
