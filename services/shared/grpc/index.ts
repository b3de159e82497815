/**
 * The gRPC protocols every service mounts beside its own: health checking (health.ts) and server reflection
 * (reflection.ts), which lists the service, health and reflection itself.
 */
import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Health, healthRoutes, type HealthSource } from "./health.js";
import { reflectionRoutes } from "./reflection.js";

export { Health, healthRoutes, type HealthSource } from "./health.js";
export { reflectionRoutes, reflectionServices } from "./reflection.js";

export interface GrpcServiceOptions {
  /** The services the server mounts (usually one): reflection lists them, health knows their names. */
  services: DescService[];
  /** The server's state for grpc.health.v1.Health, e.g. its readiness checks. */
  health: HealthSource;
  /** How often a health Watch asks `health` again. Default 1 s. */
  healthIntervalMs?: number;
}

/** Mounts grpc.health.v1.Health and grpc.reflection.v1 and v1alpha ServerReflection. */
export function grpcServiceRoutes(options: GrpcServiceOptions): (router: ConnectRouter) => void {
  const health = healthRoutes(options.health, { services: options.services, intervalMs: options.healthIntervalMs });
  const reflection = reflectionRoutes([...options.services, Health]);
  return (router) => {
    health(router);
    reflection(router);
  };
}
