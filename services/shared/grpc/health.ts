/**
 * gRPC health checking (grpc.health.v1.Health), as Kubernetes' gRPC probes, load balancers and grpc-health-probe call
 * it. The state comes from the server (its readiness checks); "" asks about the whole server, and each mounted
 * service's full name about that service, which here is the same answer.
 */
import { setTimeout as sleep } from "node:timers/promises";
import { create, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status, HealthCheckResponseSchema } from "./gen/grpc/health/v1/health_pb.js";

export { Health };

/** The server's state; a source that rejects counts as not serving. */
export type HealthSource = () => Promise<"serving" | "not_serving">;

export interface HealthOptions {
  /** The services whose names Check and Watch know, besides "" (usually the service the server mounts). */
  services: DescService[];
  /** How often a Watch asks the source again. Default 1 s. */
  intervalMs?: number;
}

const DEFAULT_INTERVAL_MS = 1_000;

/** Mounts grpc.health.v1.Health: Check, List and Watch. */
export function healthRoutes(source: HealthSource, options: HealthOptions): (router: ConnectRouter) => void {
  const known = new Set(["", ...options.services.map((service) => service.typeName)]);
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const read = sharedReader(source);
  const response = (status: Status) => create(HealthCheckResponseSchema, { status });

  return (router) => {
    router.service(Health, {
      async check({ service }) {
        if (!known.has(service)) throw new ConnectError(`unknown service: ${service}`, Code.NotFound);
        return response(await read(0));
      },
      async list() {
        const status = await read(0);
        return { statuses: Object.fromEntries([...known].map((name) => [name, response(status)])) };
      },
      async *watch({ service }, context) {
        const { signal } = context;
        if (!known.has(service)) {
          // The set of services never changes here: say so once and hold the stream open, as the protocol asks.
          yield response(Status.SERVICE_UNKNOWN);
          await aborted(signal);
          return;
        }
        let last: Status | undefined;
        while (!signal.aborted) {
          // The first answer is fresh; later polls may share a neighbour's recent read.
          const status = await read(last === undefined ? 0 : intervalMs / 2);
          if (status !== last && !signal.aborted) yield response((last = status));
          await sleep(intervalMs, undefined, { signal }).catch(() => undefined);
        }
      },
    });
  };
}

/**
 * Reads the source for everyone who asks at about the same time: callers share the read in flight, and a Watch also
 * a result younger than maxAgeMs, so that many Watch streams do not each run the readiness checks.
 */
function sharedReader(source: HealthSource): (maxAgeMs: number) => Promise<Status> {
  let inFlight: Promise<Status> | undefined;
  let latest: { at: number; status: Status } | undefined;
  return (maxAgeMs) => {
    if (latest && Date.now() - latest.at < maxAgeMs) return Promise.resolve(latest.status);
    inFlight ??= source()
      .then(
        (state) => (state === "serving" ? Status.SERVING : Status.NOT_SERVING),
        () => Status.NOT_SERVING,
      )
      .then((status) => {
        latest = { at: Date.now(), status };
        inFlight = undefined;
        return status;
      });
    return inFlight;
  };
}

/** Resolves when the signal aborts. */
function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve(), { once: true })));
}
