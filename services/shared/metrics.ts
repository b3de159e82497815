/**
 * One prom-client registry per process, served at GET /metrics: the Node runtime defaults plus RED metrics for
 * every RPC (see interceptors.ts) and each service's business metrics. Labels stay low-cardinality.
 */
import client from "prom-client";

export const registry = new client.Registry();

let started = false;

/** Labels every series with the service name and starts the runtime collectors (once per process). */
export function initMetrics(service: string): client.Registry {
  if (!started) {
    started = true;
    registry.setDefaultLabels({ service });
    client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });
  }
  return registry;
}

const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export const rpcDuration = new client.Histogram({
  name: "mcsv_rpc_duration_seconds",
  help: "Duration of Connect RPCs, by side (server or client), RPC service, method and Connect code.",
  labelNames: ["side", "rpc_service", "rpc_method", "code"] as const,
  buckets: RPC_BUCKETS,
  registers: [registry],
});

export const rpcInFlight = new client.Gauge({
  name: "mcsv_rpc_in_flight",
  help: "Connect RPCs in progress, by side, RPC service and method.",
  labelNames: ["side", "rpc_service", "rpc_method"] as const,
  registers: [registry],
});

export { client as prom };
